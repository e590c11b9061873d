# tripstream: `make demo` runs the pipeline on the bundled sample, `make test` runs the tests.
# Both install what they need first (`make bootstrap`, idempotent and quick when done).

VENV   := .venv
PY     := $(VENV)/bin/python
TS     := $(VENV)/bin/tripstream
PYTEST_ARGS ?=

.PHONY: help bootstrap up down status demo test bench chaos clean

help:  ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

bootstrap:  ## Install the venv (PyFlink included), the Kafka/Flink jars, PostgreSQL and the schema registry
	@bash scripts/bootstrap.sh

up: bootstrap  ## Start Kafka, Flink, PostgreSQL and the schema registry on 127.0.0.1
	@$(TS) up

down:  ## Stop the local stack (data kept)
	@if [ -x $(TS) ]; then $(TS) down; fi

status:  ## Show each component's state
	@$(TS) status

demo: bootstrap  ## Start the stack and run the pipeline on the bundled sample
	@bash scripts/demo.sh

test: bootstrap  ## Run the test suite against a stack of its own (other ports)
	@$(PY) -m pytest $(PYTEST_ARGS)

PEERS ?= quix,spark

bench: up  ## Benchmarks (not part of test): producer, pipeline, a file into Kafka, and the peers (PEERS=none skips Quix Streams and Spark)
	@$(PY) bench/pipeline_bench.py
	@$(PY) bench/file_producer_bench.py --rounds 1
	@if [ "$(PEERS)" != "none" ]; then $(PY) bench/peers_bench.py --peers $(PEERS); fi

clean:  ## Stop everything, delete the state dirs, the jars and the venv
	@if [ -x $(TS) ]; then $(TS) down --purge; $(TS) --state-dir .tripstream-test down --purge; fi
	rm -rf build $(VENV)

chaos: bootstrap  ## The month in file order with 5 TaskManager kills, then verify (own stack; KILLS=N)
	@$(PY) bench/chaos.py --kills $(or $(KILLS),5)
