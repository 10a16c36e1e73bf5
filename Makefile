# flowvae: two commands for a fresh machine.
#   make demo   set up .venv and train + evaluate the paper's model on scikit-learn's digits
#   make test   set up .venv, run ruff and mypy (make lint), then the test suite
PYTHON ?= python3
VENV   ?= .venv
# A CPU build of PyTorch by default. On a GPU machine: make TORCH="torch" setup
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.flowvae-installed
DEMO   ?= runs/demo

.PHONY: setup demo test lint clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile src/flowvae/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/flowvae train digits --run $(DEMO) --device cpu
	$(BIN)/flowvae eval $(DEMO) --device cpu
	$(BIN)/flowvae sample $(DEMO) --device cpu --temperature 0.7 0.8 0.9 1.0
	$(BIN)/flowvae switch $(DEMO) --device cpu --pairs 8
	$(BIN)/flowvae interpolate $(DEMO) --device cpu
	$(BIN)/flowvae probe $(DEMO) --device cpu
	$(BIN)/flowvae check $(DEMO) --device cpu
	$(BIN)/flowvae report $(DEMO)
	@echo "demo run folder: $(DEMO); open $(DEMO)/report.html"

test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check src tests benchmarks && $(BIN)/python -m mypy src/flowvae

clean-demo:
	rm -rf $(DEMO)
