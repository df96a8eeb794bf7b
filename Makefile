# quantkit developer commands. `make install` once, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint bench clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'

test:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check quantkit tests bench
	$(BIN)/ruff format --check quantkit tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# Side-by-side measurements against onnxruntime.quantization on ../shared/assets (skips when absent).
bench:
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
