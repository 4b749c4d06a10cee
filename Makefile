# TileScribe: `make test` and `make demo` each set everything up first (idempotent).
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM := offscreen
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup test test-fast demo package install-plugin clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

# Core tests only (no QGIS, no real model, no multi-process or timeout waits): ~400 tests,
# 30 s on 2 shared cores (12 s of CPU). The rest is marked `slow` or `qgis` (tests/conftest.py).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not qgis"

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf build dist .pytest_cache demo-output

# dist/tilescribe-<version>.zip for QGIS's "Install from ZIP" (stdlib only: no setup needed).
package:
	$(if $(wildcard $(PY)),$(PY),python3) scripts/package.py

# Link this checkout into the default QGIS profile (override with QGIS_PROFILE_DIR=...).
install-plugin:
	@profile="$${QGIS_PROFILE_DIR:-$$( [ "$$(uname)" = Darwin ] && echo "$$HOME/Library/Application Support" || echo "$${XDG_DATA_HOME:-$$HOME/.local/share}")/QGIS/QGIS3/profiles/default}"; \
	mkdir -p "$$profile/python/plugins" && \
	ln -sfn "$(CURDIR)" "$$profile/python/plugins/tilescribe" && \
	echo "linked $$profile/python/plugins/tilescribe -> $(CURDIR)"; \
	echo "restart QGIS, then enable TileScribe in Plugins > Manage and Install Plugins"
