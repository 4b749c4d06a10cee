"""Which device and backend will caption: the llama.cpp build, CPU features, GPU offload, and a
one-line hint when a GPU is present that this build cannot use."""

from __future__ import annotations

import platform
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

NVIDIA, APPLE, AMD = "NVIDIA", "Apple (Metal)", "AMD"
_CPU_FEATURE = re.compile(r"\b([A-Z][A-Z0-9_]+) = 1\b")


@dataclass
class DeviceReport:
    llama_cpp: Optional[str]             # version, None when it cannot be imported
    gpu_offload: Optional[bool]          # llama_supports_gpu_offload()
    cpu_features: list = field(default_factory=list)
    gpus: list = field(default_factory=list)   # GPUs seen on the machine (NVIDIA, Apple, AMD)
    error: str = ""

    @property
    def hint(self) -> str:
        return gpu_hint(self.gpus, self.gpu_offload)

    def line(self) -> str:
        if self.llama_cpp is None:
            return f"captioning device: llama-cpp-python cannot be imported ({self.error})"
        where = "GPU offload supported" if self.gpu_offload else "CPU only (no GPU offload in this build)"
        features = " ".join(self.cpu_features) or "none reported"
        seen = ", ".join(self.gpus) or "none seen"
        return f"captioning device: llama.cpp {self.llama_cpp}, {where}; CPU features: {features}; GPU: {seen}"

    def to_json(self) -> dict:
        return {"llama_cpp": self.llama_cpp, "gpu_offload": self.gpu_offload, "cpu_features": self.cpu_features,
                "gpus": self.gpus, "hint": self.hint, "error": self.error}


def device_report() -> DeviceReport:
    gpus = gpus_present()
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:
        return DeviceReport(None, None, gpus=gpus, error=str(exc))
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return DeviceReport(str(getattr(llama_cpp, "__version__", "unknown")),
                        bool(llama_cpp.llama_supports_gpu_offload()), cpu_features(text), gpus)


def cpu_features(system_info: str) -> list[str]:
    """The instruction sets llama.cpp was built to use ("AVX2 = 1 | ..." in its system info)."""
    return list(dict.fromkeys(_CPU_FEATURE.findall(system_info)))


def gpus_present() -> list[str]:
    """GPUs this machine has, seen without loading any driver library."""
    found = []
    if shutil.which("nvidia-smi") or Path("/dev/nvidia0").exists():
        found.append(NVIDIA)
    if sys.platform == "darwin" and platform.machine() == "arm64":
        found.append(APPLE)
    if Path("/dev/kfd").exists():
        found.append(AMD)
    return found


def gpu_hint(gpus: list, gpu_offload: Optional[bool]) -> str:
    """What to do so that captioning uses the GPU; empty when nothing can be gained."""
    if not gpus:
        return ""
    if gpu_offload:
        return ("GPU offload works: give --gpu-layers 99 to `tilescribe index` to put the whole "
                "model on the GPU.")
    if NVIDIA in gpus:
        return ("An NVIDIA GPU is present but this llama-cpp-python cannot use it: install the NVIDIA "
                "driver and the CUDA toolkit (nvcc), then run `make setup` again, which builds llama.cpp "
                "with CUDA when nvcc and nvidia-smi work.")
    if APPLE in gpus:
        return ("This Mac's GPU (Metal) is not used by this llama-cpp-python: install the Xcode "
                "command line tools and run `make setup` again (llama.cpp builds with Metal on Apple silicon).")
    return ("An AMD GPU is present but this llama-cpp-python cannot use it: install the Vulkan SDK "
            "(glslc, vulkaninfo), then run `make setup` again, which builds llama.cpp with Vulkan.")
