# Two commands: `make demo` and `make test` (`make quick`: the same without the slow tests). All set up .venv
# on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test quick lint format clean

# torch/torchvision: the pair this machine's wheel store holds; elsewhere any release in pyproject's range.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/python -m pip install --quiet torch torchvision
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

SCENE := sample_data/netherlands_0p25m_epsg28992.tif
DEMO := demo_output

demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/geoseg info models/manet_r50_loveda_demo.safetensors
	$(BIN)/geoseg predict $(SCENE) -o $(DEMO)/netherlands.classes.tif --confidence --quicklook --overwrite
	$(BIN)/geoseg vectorize $(DEMO)/netherlands.classes.tif -o $(DEMO)/netherlands.polygons.gpkg --min-area 2 --overwrite
	@echo
	@echo "Outputs (open them in QGIS):"
	@echo "  class raster      $(DEMO)/netherlands.classes.tif"
	@echo "  confidence        $(DEMO)/netherlands.classes.confidence.tif"
	@echo "  polygons          $(DEMO)/netherlands.polygons.gpkg"
	@echo "  quick-look        $(DEMO)/netherlands.classes.quicklook.png"

test: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks docs/make_images.py
	$(BIN)/ruff format --check geoseg tests benchmarks docs/make_images.py
	$(BIN)/python -m pytest -q

# The quick check while working: ruff and the tests not marked slow (pyproject.toml says which those are).
quick: $(STAMP)
	$(BIN)/ruff check geoseg tests benchmarks docs/make_images.py
	$(BIN)/ruff format --check geoseg tests benchmarks docs/make_images.py
	$(BIN)/python -m pytest -q -m "not slow"

format: $(STAMP)
	$(BIN)/ruff format geoseg tests benchmarks docs/make_images.py
	$(BIN)/ruff check --fix geoseg tests benchmarks docs/make_images.py

clean:
	rm -rf $(VENV) build *.egg-info demo_output
