# flowvae: two commands for a fresh machine.
#   make demo   set up .venv and train + evaluate the paper's model on scikit-learn's digits (preset digits-global)
#   make test   set up .venv, run ruff, mypy and lint-imports (make lint), then the test suite
#   make test-torch-range   the test suite again on the oldest and the newest supported PyTorch (CI runs it)
#   make docs   the documentation site into site/ (mkdocs, strict)
PYTHON ?= python3
VENV   ?= .venv
# A CPU build of PyTorch by default. On a GPU machine: make TORCH="torch" setup
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.flowvae-installed
DEMO   ?= runs/demo

# The oldest and the newest PyTorch that pyproject.toml admits: PyPI has only CUDA builds of them for
# x86_64 (about 5 GB each with their nvidia-* packages, installed one at a time and deleted after).
TORCH_OLDEST ?= torch==2.4.1
TORCH_NEWEST ?= torch==2.15.0

.PHONY: setup demo test lint docs test-torch-range clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile src/flowvae/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/flowvae train digits-global --run $(DEMO) --device cpu
	$(BIN)/flowvae eval $(DEMO) --device cpu
	$(BIN)/flowvae sample $(DEMO) --device cpu --temperature 0.7 0.8 0.9 1.0
	$(BIN)/flowvae switch $(DEMO) --device cpu --pairs 8
	$(BIN)/flowvae interpolate $(DEMO) --device cpu
	$(BIN)/flowvae manipulate $(DEMO) --device cpu --attribute 3 --curves
	$(BIN)/flowvae probe $(DEMO) --device cpu
	$(BIN)/flowvae check $(DEMO) --device cpu
	$(BIN)/flowvae report $(DEMO)
	@echo "demo run folder: $(DEMO); open $(DEMO)/report.html"

test: lint
	$(BIN)/python -m pytest -q --durations=15  # the slowest tests, to keep the suite within about 15 min

# Everything but the tests that do not touch torch's behaviour: the documentation build, the wheel
# build, the HTML report in Chromium and the slow end-to-end FID against the reference package.
RANGE_PYTEST ?= --ignore=tests/project/test_docs.py --ignore=tests/project/test_packaging.py --ignore=tests/unit/reporting/test_report.py -m "not slow"

test-torch-range:
	.ci/torch_env "$(TORCH_OLDEST)" .venv-oldest $(RANGE_PYTEST)
	.ci/torch_env "$(TORCH_NEWEST)" .venv-newest $(RANGE_PYTEST)

docs: $(STAMP)
	$(BIN)/mkdocs build --strict -d site

# lint-imports: the layers, no cycles, no private names across modules ([tool.importlinter] in
# pyproject.toml; tools/import_contracts.py holds the private-names contract)
lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks tools && $(BIN)/python -m mypy src/flowvae
	PYTHONPATH=tools $(BIN)/lint-imports --no-cache

clean-demo:
	rm -rf $(DEMO)
