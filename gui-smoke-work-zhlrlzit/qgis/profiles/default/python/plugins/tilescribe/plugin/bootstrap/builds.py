"""Which torch and llama-cpp-python builds fit this machine: CPU, CUDA or Metal.

Facts (what is installed) are gathered by `detect_facts`; the decision (`choose_build`) is a
pure function of them, so every platform's rule is unit-tested here.

- Linux: PyPI's torch is a CUDA build (several GB), so the CPU build comes from torch's CPU
  index unless an NVIDIA GPU with a working driver is there and wanted.
- Windows: PyPI's torch is the CPU build; the CUDA build comes from torch's CUDA index.
- macOS on Apple silicon: PyPI's torch has Metal (MPS); llama.cpp is built with Metal.
  Intel Macs: torch publishes no wheels for them any more.
- llama-cpp-python: a CUDA build only where the driver works and the CUDA compiler (nvcc)
  is there to build it, the rule scripts/setup.sh follows (a wheel is prebuilt or compiled).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from .llama_variants import cpu_key, cpu_variants, read_cpu_flags  # noqa: F401 (cpu_key: re-exported)
from .platforms import LINUX, MACOS, WINDOWS
from .spec import EnvironmentSpec

CUDA_LLAMA_VARIANT = "cu124"  # the newest CUDA of llama-cpp-python's prebuilt wheel index


class UnsupportedPlatform(RuntimeError):
    """No torch build exists for this machine: the message says what to use instead."""


@dataclass(frozen=True)
class MachineFacts:
    system: str
    machine: str                # x86_64, AMD64, arm64, aarch64
    nvidia_gpu: bool = False    # `nvidia-smi -L` lists a GPU: a driver that works
    cuda_compiler: bool = False  # nvcc: can compile llama.cpp's CUDA backend
    cpu_flags: str = ""         # /proc/cpuinfo's flags line (setup.sh's cache key)
    compiler: Optional[str] = None  # a C++ compiler that pip's build of llama.cpp can use

    @property
    def apple_silicon(self) -> bool:
        return self.system == MACOS and self.machine.lower() in ("arm64", "aarch64")


@dataclass(frozen=True)
class BuildChoice:
    accelerator: str                 # "cpu", "cuda" or "metal"
    torch_index: Optional[str]       # an extra index for torch; None: PyPI's torch is the right one
    llama_variant: str               # folder of the prebuilt wheel index: cpu, metal, cu124
    llama_cmake_args: str            # CMAKE_ARGS when llama-cpp-python is compiled here
    cache_folder: str                # the wheel cache's subfolder, named as scripts/setup.sh names it
    notes: tuple = ()
    variants: tuple = ()             # every build to try on this CPU, best first (llama_variants)


def gpu_usable(facts: MachineFacts) -> bool:
    return facts.nvidia_gpu or facts.apple_silicon


def choose_build(facts: MachineFacts, spec: EnvironmentSpec, want_gpu: Optional[bool] = None) -> BuildChoice:
    """want_gpu None: use a GPU when one is usable. Raises UnsupportedPlatform where torch has no build.

    llama.cpp is compiled as the first of `llama_variants.cpu_variants` (never -march=native: AMX
    kernels crash on recent Xeons); the installer proves it and falls back along `variants`."""
    if facts.system == MACOS and not facts.apple_silicon:
        raise UnsupportedPlatform(
            f"torch {spec.torch_version} has no build for Intel Macs. Run the worker elsewhere: point "
            "TileScribe at a captioning server (Settings), or use a Python you name whose torch works.")
    if facts.apple_silicon:
        return _choice("metal", None, "metal", facts, ["-DGGML_METAL=ON"])
    want = gpu_usable(facts) if want_gpu is None else want_gpu
    if not (want and facts.nvidia_gpu):
        notes = ("No usable NVIDIA GPU: the CPU builds.",) if want else ()
        torch_index = spec.torch_cpu_index if facts.system == LINUX else None
        return _choice("cpu", torch_index, "cpu", facts, [], notes)
    torch_index = spec.torch_cuda_index if facts.system == WINDOWS else None
    if facts.cuda_compiler:
        return _choice("cuda", torch_index, CUDA_LLAMA_VARIANT, facts, ["-DGGML_CUDA=ON"])
    return _choice("cuda", torch_index, CUDA_LLAMA_VARIANT, facts, [],
                   ("torch uses the GPU. llama-cpp-python takes a prebuilt CUDA wheel where one exists, "
                    "else it is compiled for the CPU: install the CUDA toolkit (nvcc), then Repair.",))


def _choice(accelerator: str, torch_index: Optional[str], llama_variant: str, facts: MachineFacts,
            gpu_args: list, notes: tuple = ()) -> BuildChoice:
    variants = tuple(cpu_variants(facts.cpu_flags, facts.machine, gpu_args))
    first = variants[0]
    return BuildChoice(accelerator, torch_index, llama_variant, first.cmake_string, first.cache_name, notes, variants)


# -- facts -------------------------------------------------------------------------------

Which = Callable[[str], Optional[str]]


def _quiet_ok(argv: list) -> bool:
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def find_compiler(system: str, env: Mapping[str, str], which: Which = shutil.which,
                  ok: Callable[[list], bool] = _quiet_ok) -> Optional[str]:
    """A C++ compiler pip's build of llama.cpp finds (cmake itself comes from PyPI if missing)."""
    if system == WINDOWS:
        vswhere = Path(env.get("ProgramFiles(x86)", r"C:\Program Files (x86)")) / \
            "Microsoft Visual Studio" / "Installer" / "vswhere.exe"
        if which("cl") or (vswhere.is_file() and ok([str(vswhere), "-latest", "-products", "*", "-requires",
                                                     "Microsoft.VisualStudio.Component.VC.Tools.x86.x64"])):
            return "MSVC (Visual Studio Build Tools)"
        return None
    if system == MACOS:
        return "clang (Xcode Command Line Tools)" if ok(["xcrun", "--find", "clang++"]) else None
    for name in ("c++", "g++", "clang++"):
        if which(name):
            return name
    return None


def compiler_advice(system: str) -> str:
    if system == WINDOWS:
        return ("Install Microsoft's free 'Build Tools for Visual Studio' with the 'Desktop development "
                "with C++' workload, restart QGIS, then run Set up TileScribe again.")
    if system == MACOS:
        return "Run `xcode-select --install` in Terminal, then run Set up TileScribe again."
    return ("Install a C++ compiler (Debian/Ubuntu: `sudo apt install build-essential`; Fedora: "
            "`sudo dnf install gcc-c++`), then run Set up TileScribe again.")


def detect_facts(system: str, machine: str, env: Mapping[str, str], which: Which = shutil.which) -> MachineFacts:
    nvidia = bool(which("nvidia-smi")) and _quiet_ok(["nvidia-smi", "-L"])
    return MachineFacts(system, machine, nvidia, bool(which("nvcc")), read_cpu_flags() if system == LINUX else "",
                        find_compiler(system, env, which))
