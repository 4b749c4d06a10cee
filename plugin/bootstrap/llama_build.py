"""Build llama-cpp-python (and llama.cpp's llama-server) for this CPU, prove each build in a child
process, and fall back to the next safer variant when one dies. What scripts/setup.sh runs:

    python -m tilescribe.plugin.bootstrap.llama_build --python .venv/bin/python --sdist SDIST \
        --server-link .venv/bin/llama-server

Each variant's wheel and server are cached under a folder named by the variant and the recipe
(llama_variants.Variant.cache_name), beside a proof record per CPU: a second run reuses a proven
build in seconds and never retries one that crashed here. Prints one line saying which variant
runs and why. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .llama_variants import Proof, Variant, cpu_key, cpu_variants, prove, read_cpu_flags, read_record, write_record

Log = Callable[[str], None]
# Runs one build command: (argv, env, what it does, a callback for each output line or None);
# raises when the command fails. setup.sh's is _run below; the plugin's setup passes its own
# (its log file, its progress bar, its Cancel button).
Runner = Callable[[list, dict, str, Optional[Callable[[str], None]]], None]
STAMP = ".llama-build"


def server_name(system: Optional[str] = None) -> str:
    return "llama-server.exe" if (system or platform.system()) == "Windows" else "llama-server"


def server_folder(cache: Path, version: str, variant: Variant) -> Path:
    """Where a variant's llama-server is kept: <cache>/llama-server/<version>-<variant>-r<recipe>-<hash>."""
    return Path(cache) / "llama-server" / f"{version}-{variant.cache_name}"


def gpu_cmake_args() -> list:
    """A GPU backend only where it can run: a CUDA compiler alone (no driver, no card) would add
    an hour of compiling for nothing."""
    def ok(argv: list) -> bool:
        try:
            run = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            return run.returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    if shutil.which("nvcc") and shutil.which("nvidia-smi") and ok(["nvidia-smi", "-L"]):
        return ["-DGGML_CUDA=ON"]
    return []


@dataclass
class Runtime:
    """What ended up installed: the variant, why, and the proofs that it runs here."""

    variant: Variant
    wheel: Path
    server: Optional[Path]
    proofs: list = field(default_factory=list)
    rejected: list = field(default_factory=list)   # (variant name, proof) of builds that died here

    def summary(self) -> str:
        engines = " and ".join("in process" if p.engine == "in-process" else "llama-server" for p in self.proofs)
        line = f"llama.cpp build: {self.variant.name} ({self.variant.why}); proven here {engines} with Q4_K_M and Q8_0"
        for name, proof in self.rejected:
            line += f"; {name} rejected: {proof.detail[:160]}"
        return line


class RuntimeBuilder:
    """Builds and proves llama.cpp for this CPU. `sdist` is a path, or a function that gives one
    (the plugin's setup downloads the sources only when it has to compile); `run` runs one build
    command (Runner); `cmake` is the cmake to configure llama-server with."""

    def __init__(self, python: Path, sdist, cache: Path, *, wheels: Optional[Path] = None,
                 with_server: bool = True,
                 log: Log = print, env: Optional[dict] = None, cpu_flags: Optional[str] = None,
                 machine: Optional[str] = None, gpu_args: Optional[list] = None,
                 version: Optional[str] = None, run: Optional[Runner] = None, cmake: str = "cmake"):
        self.python, self.cache = Path(python), Path(cache)
        self._sdist = sdist
        self.wheels = Path(wheels) if wheels else self.cache / "wheels"
        self.with_server, self.log = with_server, log
        self.env = dict(env if env is not None else os.environ)
        self.cpu_flags = read_cpu_flags() if cpu_flags is None else cpu_flags
        self.machine = machine or platform.machine()
        self.gpu_args = gpu_cmake_args() if gpu_args is None else gpu_args
        self.key = cpu_key(self.cpu_flags, self.machine)
        self.version = version or _sdist_version(Path(sdist))
        self.run = run or self._run
        self.cmake = cmake

    @property
    def sdist(self) -> Path:
        if callable(self._sdist):
            self._sdist = self._sdist()  # fetched once, when a build first needs it
        return Path(self._sdist)

    def variants(self) -> list:
        return cpu_variants(self.cpu_flags, self.machine, self.gpu_args)

    def ensure(self) -> Runtime:
        rejected = []
        for variant in self.variants():
            folder = self.wheels / variant.cache_name
            failed = self.recorded_failure(variant)
            if failed:
                self.log(f"skipping the {variant.name} build: it failed its check on this CPU before ({failed})")
                rejected.append((variant.name, Proof("recorded", False, failed)))
                continue
            runtime = self._try(variant, folder)
            if isinstance(runtime, Runtime):
                runtime.rejected = rejected
                return runtime
            rejected.append((variant.name, runtime))
        raise SystemExit("setup: no llama.cpp build runs on this CPU: " +
                         "; ".join(f"{name}: {proof.detail}" for name, proof in rejected))

    def recorded_failure(self, variant: Variant) -> Optional[str]:
        """How this variant failed its check on this CPU before (in either engine), or None."""
        folder = self.wheels / variant.cache_name
        for engine in ("in-process", "server"):
            record = read_record(folder, self.key, engine)
            if record and not record.get("ok"):
                return f"{engine}: {record.get('detail')}"
        return None

    def _try(self, variant: Variant, folder: Path):
        """A Runtime when the build passes its checks here, else the Proof of how it failed."""
        wheel = self._wheel(variant, folder)
        self._install(wheel)
        proofs = []
        engines = ["in-process", "server"] if self.with_server else ["in-process"]
        server = None
        for engine in engines:  # in process first: a build that dies there is not worth a server build
            if engine == "server":
                server = self.cached_server(variant) or self.compile_server(variant)
            proof = self.proof(variant, engine, server)
            if not proof.ok:
                self.log(f"the {variant.name} build failed its check ({engine}): {proof.detail}")
                return proof
            proofs.append(proof)
        return Runtime(variant, wheel, server, proofs)

    def proof(self, variant: Variant, engine: str, server: Optional[Path] = None) -> Proof:
        """The variant's proof on this CPU: its record when it passed before, else a child process
        captions with quantized models now and the outcome is recorded beside the wheel."""
        folder = self.wheels / variant.cache_name
        record = read_record(folder, self.key, engine)
        if record and record.get("ok"):
            return Proof(engine, True, record.get("detail", ""), None, tuple(record.get("checks", [])))
        self.log(f"checking the {variant.name} build {'in process' if server is None else 'in llama-server'}: "
                 "captioning with small Q4_K_M and Q8_0 models in a child process")
        proof = prove(self.python, engine, self.cache / "proof-models", self.env, server)
        write_record(folder, self.key, proof)
        return proof

    # -- building ------------------------------------------------------------------------------

    def _wheel(self, variant: Variant, folder: Path) -> Path:
        found = sorted(folder.glob(f"llama_cpp_python-{self.version}-*.whl"))
        if found:
            return found[0]
        folder.mkdir(parents=True, exist_ok=True)
        self.log(f"compiling llama-cpp-python {self.version} ({variant.name}: {variant.why}) once into {folder} "
                 "(5-10 minutes on 2 cores)")
        env = dict(self.env, CMAKE_ARGS=variant.cmake_string)
        self.run([str(self.python), "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                  "-w", str(folder), str(self.sdist)], env, "compiling llama-cpp-python", None)
        found = sorted(folder.glob(f"llama_cpp_python-{self.version}-*.whl"))
        if not found:
            raise SystemExit(f"setup: pip built no llama-cpp-python wheel in {folder}")
        return found[0]

    def _install(self, wheel: Path) -> None:
        stamp = read_stamp(self.python.parent.parent)
        if stamp.get("wheel") == str(wheel) and _imports_llama(self.python, self.env):
            return  # already this build: a second setup takes seconds
        self.run([str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                  "--force-reinstall", str(wheel)], self.env, f"installing {wheel.name}", None)

    def cached_server(self, variant: Variant) -> Optional[Path]:
        """The variant's llama-server compiled before (by setup.sh or the plugin's setup), or None."""
        binary = server_folder(self.cache, self.version, variant) / server_name()
        return binary if binary.is_file() else None

    def compile_server(self, variant: Variant, on_line: Optional[Callable[[str], None]] = None) -> Path:
        """Compile llama-server from the sources llama-cpp-python vendors, with the variant's flags,
        once into its cache folder; `on_line` sees the build tool's progress lines."""
        out = server_folder(self.cache, self.version, variant)
        binary = out / server_name()
        self.log(f"compiling llama.cpp's llama-server ({variant.name}) once into {out} (about 10 minutes on 2 cores)")
        with tempfile.TemporaryDirectory(prefix="tilescribe-llama-server-") as src:
            self.run(["tar", "-xzf", str(self.sdist), "-C", src], self.env, "unpacking the sources", None)
            tree = Path(src) / f"llama_cpp_python-{self.version}" / "vendor" / "llama.cpp"
            build = tree / "build"
            self.run([self.cmake, "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                      "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                      "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", *variant.cmake_args],
                     self.env, "configuring llama-server", on_line)
            self.run([self.cmake, "--build", str(build), "--config", "Release", "--target", "llama-server",
                      "-j", str(os.cpu_count() or 2)], self.env, "compiling llama-server", on_line)
            built = sorted((build / "bin").rglob(server_name()))  # bin/ or, with Visual Studio, bin/Release/
            if not built:
                raise SystemExit(f"setup: the build made no {server_name()} under {build / 'bin'}")
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / (server_name() + ".tmp")
            shutil.copy2(built[0], tmp)
            os.replace(tmp, binary)
        return binary

    def _run(self, argv: list, env: dict, what: str, on_line: Optional[Callable[[str], None]] = None) -> None:
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
            code = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, env=env).returncode
            if code != 0:
                output.seek(0)
                tail = output.read().splitlines()[-25:]
                raise SystemExit(f"setup: {what} failed (exit {code}):\n" + "\n".join(tail))


def _sdist_version(sdist: Path) -> str:
    name = Path(sdist).name  # llama_cpp_python-0.3.36.tar.gz
    return name[len("llama_cpp_python-"):].split(".tar")[0] if name.startswith("llama_cpp_python-") else ""


def read_stamp(venv: Path) -> dict:
    try:
        stamp = json.loads((Path(venv) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _imports_llama(python: Path, env: dict) -> bool:
    try:
        return subprocess.run([str(python), "-c", "import llama_cpp"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def install(runtime: Runtime, venv: Path, server_link: Optional[Path]) -> None:
    """Mark the environment with what it runs (the worker and `tilescribe info` read it)."""
    if server_link is not None and runtime.server is not None:
        if server_link.is_symlink() or server_link.exists():
            server_link.unlink()
        server_link.symlink_to(runtime.server)
    stamp = {"variant": runtime.variant.name, "why": runtime.variant.why,
             "cmake_args": list(runtime.variant.cmake_args),
             "wheel": str(runtime.wheel), "server": str(runtime.server) if runtime.server else None,
             "proofs": [proof.to_dict() for proof in runtime.proofs],
             "rejected": [{"variant": name, **proof.to_dict()} for name, proof in runtime.rejected],
             "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (venv / STAMP).write_text(json.dumps(stamp, indent=1), encoding="utf-8")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="Build and prove llama.cpp for this CPU.")
    parser.add_argument("--python", type=Path, required=True, help="the environment's Python")
    parser.add_argument("--sdist", type=Path, required=True, help="llama-cpp-python's source distribution")
    parser.add_argument("--cache", type=Path, required=True, help="where builds and proofs are kept")
    parser.add_argument("--wheels", type=Path, help="where compiled wheels are kept (default: CACHE/wheels)")
    parser.add_argument("--server-link", type=Path, help="link the proven llama-server here")
    parser.add_argument("--no-server", action="store_true", help="llama-cpp-python only")
    args = parser.parse_args(argv)
    log = lambda message: print(f"setup: {message}", file=sys.stderr, flush=True)  # noqa: E731
    builder = RuntimeBuilder(args.python, args.sdist, args.cache, wheels=args.wheels, with_server=not args.no_server,
                             log=log)
    runtime = builder.ensure()
    venv = args.python.parent.parent
    install(runtime, venv, args.server_link)
    log(runtime.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
