# dr: the README's commands. `make test` sets everything up and runs the suite.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test gen check-gen demo bench clean

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m dr.schema.gen --check
	$(PY) -m pytest -q tests

gen: setup
	$(PY) -m dr.schema.gen

demo: setup
	$(PY) -m dr.demo

bench: setup
	$(PY) bench/capture.py
	$(PY) bench/replay.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
