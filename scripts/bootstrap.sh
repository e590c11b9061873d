#!/usr/bin/env bash
# Install everything tripstream needs on a fresh machine; cheap when it is all in place.
#  - a Python 3.11 virtualenv in .venv with the package, PyFlink and the test tools;
#  - the Kafka broker, ZooKeeper (the cluster profile's HA) and the Flink connector jars,
#    fetched by Maven from java/*/pom.xml;
#  - the schema registry (Apicurio Registry), built by Maven and Quarkus from Maven artifacts
#    (java/registry) into build/registry/quarkus-app;
#  - PostgreSQL's server from Debian's packages, when no initdb is found;
#  - Chromium and chromium-driver from Debian's packages (the dashboard's browser test);
#  - as root: the `tripstream` system user, which Kafka and Flink run as (PostgreSQL runs as
#    `postgres`), so that no server of the stack runs as root.
# Each step is skipped when a stamp says its inputs have not changed since it last succeeded.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
STAMPS="$ROOT/build/stamps"
PYTHON_EXPLICIT=${PYTHON:-}
PYTHON=${PYTHON:-python3.11}
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

die() { echo "bootstrap: $*" >&2; exit 1; }
say() { echo "bootstrap: $*"; }
digest() { cat "$@" | sha256sum | cut -c1-16; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
stamp() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

# --- prerequisites: one clear line each -----------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "Python 3.11 not found ($PYTHON): install python3.11, or set PYTHON=/path/to/python3.11"
command -v java >/dev/null 2>&1 || die "Java not found: install OpenJDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
[ "${java_major:-0}" -ge 17 ] 2>/dev/null || die "Java 17 or newer is needed, found ${java_major:-unknown}: install OpenJDK 17"
command -v mvn >/dev/null 2>&1 || die "Maven not found: install Maven (Debian: apt-get install maven)"

# --- system packages from Debian: the PostgreSQL server; Chromium for the browser test -------
apt_install() {  # what, package...
  local what=$1; shift
  command -v apt-get >/dev/null 2>&1 || die "$what not found and no apt-get: install $* yourself"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "$what not found: run 'sudo apt-get install $*' (needs root)"
    sudo=sudo
  fi
  say "installing $what from Debian's packages ($*)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  apt_install "the PostgreSQL server" postgresql
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt_install "Chromium and its WebDriver" chromium chromium-driver
fi

# --- the unprivileged account Kafka and Flink run as when tripstream runs as root ----------
if [ "$(id -u)" -eq 0 ] && ! getent passwd tripstream >/dev/null 2>&1; then
  command -v useradd >/dev/null 2>&1 || die "useradd not found: create a system user 'tripstream' yourself (the servers run as it when you are root)"
  say "creating the system user 'tripstream' (Kafka and Flink run as it, never as root)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tripstream \
    || die "useradd could not create the system user 'tripstream'"
fi

# As root, Flink runs as `tripstream`, and so do PyFlink's Python workers inside the
# TaskManager and the `flink run` client: the venv's interpreter must be one that user can run
# (an interpreter under /root, say pyenv's, is not). Debian's python3.11 is, so it is taken then.
server_can_run() {  # interpreter
  [ "$(id -u)" -ne 0 ] && return 0
  command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux): it checks what the 'tripstream' user can run"
  runuser -u tripstream -- "$1" -c 'import encodings' >/dev/null 2>&1
}
python_real=$("$PYTHON" -c 'import sys; print(sys.executable)')
if ! server_can_run "$python_real"; then
  if [ -z "${PYTHON_EXPLICIT:-}" ] && [ -x /usr/bin/python3.11 ] && server_can_run /usr/bin/python3.11; then
    python_note=" from /usr/bin/python3.11 (the 'tripstream' user cannot run $python_real)"
    PYTHON=/usr/bin/python3.11
  else
    die "the 'tripstream' user (Kafka and Flink run as it when you are root) cannot run $python_real: install Debian's python3.11 or set PYTHON to an interpreter outside /root"
  fi
fi
if [ -x .venv/bin/python ] && ! server_can_run .venv/bin/python; then
  say "recreating .venv: its interpreter is one the 'tripstream' user cannot run"
  rm -rf .venv
fi

# --- Python virtualenv ----------------------------------------------------------------------
py_key=$(digest pyproject.toml requirements.lock)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv${python_note:-}"
  "$PYTHON" -m venv .venv
fi
if ! fresh venv "$py_key" || ! .venv/bin/python -c 'import tripstream, pyflink' >/dev/null 2>&1; then
  say "installing Python packages (PyFlink included; the first time takes a minute)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[dev]"
  stamp venv "$py_key"
fi

# --- Java artifacts -------------------------------------------------------------------------
fetch_jars() {  # name, extra maven flags
  local name=$1; shift
  local pom="java/$name/pom.xml" out="build/jars/$name"
  local key
  key=$(digest "$pom")
  if fresh "jars-$name" "$key" && [ -n "$(ls "$out"/*.jar 2>/dev/null)" ]; then
    return
  fi
  say "fetching $name jars with Maven"
  rm -rf "$out"
  mvn -q -B --color never -f "$pom" "$DEP_PLUGIN:copy-dependencies" -DoutputDirectory="$ROOT/$out" \
      -DincludeScope=runtime "$@" || die "Maven could not fetch the $name jars (see the output above)"
  stamp "jars-$name" "$key"
}
fetch_jars kafka
fetch_jars zookeeper
fetch_jars flink -DexcludeTransitive=true

# --- tripstream's own Flink functions (java/udf): the payload parser the jobs ship ---------
udf_key=$(digest java/udf/pom.xml src/tripstream/events/trip_event.avsc $(find java/udf/src -type f | sort))
udf_jar=build/jars/functions/tripstream-flink-functions.jar
if ! fresh functions "$udf_key" || [ ! -f "$udf_jar" ]; then
  say "building the Flink functions jar with Maven"
  mkdir -p "$(dirname "$udf_jar")"
  mvn -q -B --color never -f java/udf/pom.xml package > build/java-udf.log 2>&1 \
    || { cat build/java-udf.log; die "Maven could not build java/udf (see the output above)"; }
  cp java/udf/target/tripstream-flink-functions.jar "$udf_jar"
  stamp functions "$udf_key"
fi

# --- the schema registry (java/registry): Apicurio Registry, assembled by Quarkus's build step --
# First the one build-time artifact of Apicurio's that Maven Central lacks, into the local Maven
# repository (see java/registry/config-index-deployment/pom.xml); then the registry itself.
reg_key=$(digest java/registry/pom.xml $(find java/registry/src java/registry/config-index-deployment -type f | sort))
reg_app=build/registry/quarkus-app/quarkus-run.jar
if ! fresh registry "$reg_key" || [ ! -f "$reg_app" ]; then
  say "building the schema registry (Apicurio Registry) with Maven; the first time takes a few minutes"
  rm -rf build/registry
  mkdir -p build
  { mvn -B --color never -f java/registry/config-index-deployment/pom.xml install -Dregistry.build.dir="$ROOT/build/registry" \
      && mvn -B --color never -f java/registry/pom.xml package -Dregistry.build.dir="$ROOT/build/registry"; } \
      > build/registry.log 2>&1 \
    || { tail -30 build/registry.log; die "Maven could not build the schema registry (java/registry; full log in build/registry.log)"; }
  [ -f "$reg_app" ] || die "the schema registry build left no $reg_app (see build/registry.log)"
  stamp registry "$reg_key"
fi

if ! server_can_run .venv/bin/python; then
  die "the 'tripstream' user cannot run $ROOT/.venv/bin/python (a parent directory is closed to others): Kafka and Flink run as it, so put the checkout where other users can enter (not under /root)"
fi
say "ready ($(.venv/bin/python --version), Java $java_major, $(ls build/jars/kafka | wc -l) Kafka jars, $(ls build/jars/flink | wc -l) Flink connector jars, schema registry in build/registry)"
