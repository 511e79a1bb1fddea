# make search: install into .venv and run the default search (tiny space, SQLite in results/)
# make test:   install into .venv (with test extras), lint (ruff check, configured in pyproject.toml), run the tests
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: search test install install-test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'

search: install
	$(BIN)/nas search --space tiny --study demo

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
