"""One line saying which engine, llama.cpp build and device will write the captions."""

from __future__ import annotations

import re


def describe_engine(captioner) -> str:
    """For the CLI log and the QGIS dialog: engine, build, device (GPU only when offloading)."""
    engine = getattr(captioner, "engine", None)
    if engine == "llama-server":
        device = "GPU" if captioner.n_gpu_layers else "CPU"
        return f"llama-server ({captioner.build}), {captioner.slots} slots, {device}"
    if getattr(captioner, "backend", "") == "llama.cpp":
        return f"llama-cpp-python in process, {llama_cpp_device(captioner.n_gpu_layers)}"
    return f"{getattr(captioner, 'backend', type(captioner).__name__)} at {getattr(captioner, 'url', '?')}"


def llama_cpp_device(n_gpu_layers: int = 0) -> str:
    """"CPU (AVX512, AVX2)" or "GPU offload of N layers" from the loaded llama.cpp library."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    features = [name for name in ("AVX512", "AVX2", "AVX", "NEON", "SVE")
                if re.search(rf"\b{name} = 1", info)]
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if gpu and n_gpu_layers:
        return f"GPU offload of {n_gpu_layers} layers"
    note = "" if gpu else ", this build has no GPU backend"
    return f"CPU ({', '.join(features[:2]) or 'baseline x86-64'}{note})"
