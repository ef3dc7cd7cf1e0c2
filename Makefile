# The two commands of README.md. Each installs what is missing first (tools/setup.sh).
PY := .venv/bin/python
DEMO_DIR ?= data/demo

.PHONY: demo test setup

setup:
	@bash tools/setup.sh

demo:
	@bash tools/setup.sh --demo
	@$(PY) -m tools.demo --out $(DEMO_DIR)

test: setup
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
