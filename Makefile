# Shortcuts for the README's commands (scripts/test.sh, scripts/demo.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test gen check-gen demo bench clean

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

gen: setup
	$(PY) -m dr.schema.gen

demo:
	bash scripts/demo.sh

bench: setup
	$(PY) bench/capture.py
	$(PY) bench/replay.py
	$(PY) bench/streams.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
