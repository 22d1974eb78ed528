# Two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The torch/torchvision pair on this machine's local wheel store; users elsewhere get any release in range.
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install --quiet torch torchvision
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m geoseg.demo

test: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks
	$(BIN)/ruff format --check geoseg tests benchmarks
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff format geoseg tests benchmarks
	$(BIN)/ruff check --fix geoseg tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info demo_output
