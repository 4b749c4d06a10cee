# TileScribe: `make test` and `make demo` each set everything up first (idempotent).
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM := offscreen
export HF_HUB_OFFLINE := 1

.PHONY: setup test test-fast demo package install-plugin clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

# Core tests only (no QGIS, no real models): seconds.
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not qgis"

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf build dist .pytest_cache demo-output
