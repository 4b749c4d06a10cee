# TileScribe: `make test` and `make demo` each set everything up first (idempotent).
VENV := .venv
PY := $(VENV)/bin/python
export QT_QPA_PLATFORM := offscreen
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup test test-fast lint docs demo package install-plugin clean gui-smoke gui-first-run bench-dock bench-project bench-dock-project

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

# Core tests only (no QGIS, no real model, no multi-process or timeout waits): ~400 tests,
# 30 s on 2 shared cores (12 s of CPU). The rest is marked `slow` or `qgis` (tests/conftest.py).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not qgis"

# ruff (rules and settings in pyproject.toml), ruff's formatter on the files already in its
# format (the rest of the tree keeps its own hanging-indent style for now), mypy on its scope.
FORMATTED := setup.py tests/test_docs.py tests/test_packaging.py
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check $(FORMATTED)
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/) into build/site; any warning fails it.
docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf build dist .pytest_cache demo-output gui-smoke gui-first-run *.egg-info

# The real QGIS under Xvfb with the plugin from `make package`'s ZIP: a user's session, one
# screenshot per step in gui-smoke/ (or $$GUI_SMOKE_OUT); fails on any Python error in QGIS.
gui-smoke: setup
	env -u QT_QPA_PLATFORM $(PY) scripts/gui_smoke.py $${GUI_SMOKE_OUT:-gui-smoke}

# The same for a user with nothing set up: the dock's Set up offer, the setup task (real pip, the
# cached llama-cpp-python wheel), then Index layer with the test model and a search. 3-6 minutes.
# Screenshots in gui-first-run/ (or $$GUI_SMOKE_OUT); exit 77 when no wheel is cached.
gui-first-run: setup
	env -u QT_QPA_PLATFORM $(PY) scripts/gui_smoke.py --first-run $${GUI_SMOKE_OUT:-gui-first-run}

# Enter-to-painted latency of the real dock against a warm worker, beside the worker-only time.
bench-dock: setup
	$(PY) scripts/bench_dock.py

# One query over 20 indexes of 10k vectors plus one of 1M, beside the 1M index alone (worker side).
bench-project: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) scripts/bench_project_search.py

# The same 21 indexes searched from the real dock (Enter to painted), beside the 1M index ticked alone.
bench-dock-project: setup
	OMP_WAIT_POLICY=PASSIVE $(PY) scripts/bench_dock.py --project

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
