#!/usr/bin/env bash
# Install everything tripstream needs on a fresh machine; cheap when it is all in place.
#  - a Python 3.11 virtualenv in .venv with the package, PyFlink and the test tools;
#  - the Kafka broker and the Flink connector jars, fetched by Maven from java/*/pom.xml;
#  - PostgreSQL's server from Debian's packages, when no initdb is found;
#  - Chromium and chromium-driver from Debian's packages (the dashboard's browser test).
# Each step is skipped when a stamp says its inputs have not changed since it last succeeded.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
STAMPS="$ROOT/build/stamps"
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

# --- Python virtualenv ----------------------------------------------------------------------
py_key=$(digest pyproject.toml requirements.lock)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
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
fetch_jars flink -DexcludeTransitive=true

# --- tripstream's own Flink functions (java/udf): the payload parser the jobs ship ---------
udf_key=$(digest java/udf/pom.xml $(find java/udf/src -type f | sort))
udf_jar=build/jars/functions/tripstream-flink-functions.jar
if ! fresh functions "$udf_key" || [ ! -f "$udf_jar" ]; then
  say "building the Flink functions jar with Maven"
  mkdir -p "$(dirname "$udf_jar")"
  mvn -q -B --color never -f java/udf/pom.xml package > build/java-udf.log 2>&1 \
    || { cat build/java-udf.log; die "Maven could not build java/udf (see the output above)"; }
  cp java/udf/target/tripstream-flink-functions.jar "$udf_jar"
  stamp functions "$udf_key"
fi

say "ready ($(.venv/bin/python --version), Java $java_major, $(ls build/jars/kafka | wc -l) Kafka jars, $(ls build/jars/flink | wc -l) Flink connector jars)"
