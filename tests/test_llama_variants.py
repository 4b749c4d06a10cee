"""Which llama.cpp builds are tried on which CPU, and how the child-process proof classifies a build."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tilescribe.plugin.bootstrap import llama_variants as lv
from tilescribe.plugin.bootstrap.llama_build import RuntimeBuilder, read_stamp

SAPPHIRE_RAPIDS = ("flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx_vnni avx512f avx512cd avx512vl avx512dq "
                   "avx512bw avx512vbmi avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16")
SKYLAKE_X = "flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512cd avx512vl avx512dq avx512bw"
HASWELL = "flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2"
OLD_ATOM = "flags\t\t: fpu sse2 ssse3"


def names(flags: str, machine: str = "x86_64") -> list:
    return [variant.name for variant in lv.cpu_variants(flags, machine)]


def test_each_cpu_gets_its_best_safe_build_first_and_a_baseline_last():
    assert names(SAPPHIRE_RAPIDS) == ["avx512", "avx2", "baseline"]
    assert names(SKYLAKE_X) == ["avx512", "avx2", "baseline"]
    assert names(HASWELL) == ["avx2", "baseline"]
    assert names(OLD_ATOM) == ["baseline"]
    assert names("Features\t: fp asimd sve", "aarch64") == ["native", "portable"]


def test_no_x86_build_is_native_or_has_amx():
    """-march=native on an AMX Xeon compiles the AMX kernels that die with SIGILL (PR 26954)."""
    for flags in (SAPPHIRE_RAPIDS, SKYLAKE_X, HASWELL, OLD_ATOM):
        for variant in lv.cpu_variants(flags, "x86_64"):
            assert "-DGGML_NATIVE=OFF" in variant.cmake_args
            assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(variant.cmake_args)
    first = lv.cpu_variants(SAPPHIRE_RAPIDS, "x86_64")[0]
    assert "AMX" in first.why and "SIGILL" in first.why


def test_avx512_build_enables_only_the_extensions_the_cpu_has():
    skylake = lv.cpu_variants(SKYLAKE_X, "x86_64")[0].cmake_args
    assert "-DGGML_AVX512=ON" in skylake and "-DGGML_AVX512_VNNI=ON" not in skylake
    assert "-DGGML_AVX_VNNI=OFF" in skylake
    sapphire = lv.cpu_variants(SAPPHIRE_RAPIDS, "x86_64")[0].cmake_args
    wanted = {"-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX512_VBMI=ON", "-DGGML_AVX_VNNI=ON"}
    assert wanted <= set(sapphire)


def test_cache_folders_carry_the_recipe_and_the_flags(monkeypatch):
    """A build made by an older recipe (the -march=native one) is never picked up again."""
    variant = lv.cpu_variants(HASWELL, "x86_64")[0]
    assert variant.cache_name.startswith(f"avx2-r{lv.RECIPE}-")
    assert not variant.cache_name.startswith("native-")
    cuda = lv.cpu_variants(HASWELL, "x86_64", ["-DGGML_CUDA=ON"])[0]
    assert cuda.cache_name != variant.cache_name and "-DGGML_CUDA=ON" in cuda.cmake_args
    before = variant.cache_name
    monkeypatch.setattr(lv, "RECIPE", lv.RECIPE + 1)
    assert before != lv.cpu_variants(HASWELL, "x86_64")[0].cache_name


def fake_python(tmp_path: Path, body: str) -> Path:
    """A stand-in for the environment's Python that ends the way a crashing build would."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("body, signal", [("kill -ILL $$", "SIGILL"), ("kill -SEGV $$", "SIGSEGV"),
                                          ("kill -ABRT $$", "SIGABRT")])
def test_a_child_killed_by_a_signal_fails_the_proof_and_names_it(tmp_path, body, signal):
    proof = lv.prove(fake_python(tmp_path, body), "in-process", tmp_path, os.environ)
    assert not proof.ok and proof.signal == signal and proof.detail.startswith(f"killed by {signal}")


def test_a_dead_llama_server_is_named_by_its_signal(tmp_path):
    line = '{"ok": false, "engine": "server", "checks": [], "detail": "ModelError: exit status -4", "server_exit": -4}'
    proof = lv.prove(fake_python(tmp_path, f"echo '{line}'; exit 3"), "server", tmp_path, os.environ, Path("x"))
    assert not proof.ok and proof.signal == "SIGILL" and "llama-server killed by SIGILL" in proof.detail


def test_records_are_per_cpu_and_per_recipe(tmp_path, monkeypatch):
    lv.write_record(tmp_path, "cpu-a", lv.Proof("in-process", False, "killed by SIGILL", "SIGILL"))
    assert lv.read_record(tmp_path, "cpu-a", "in-process")["signal"] == "SIGILL"
    assert lv.read_record(tmp_path, "cpu-b", "in-process") is None  # another CPU proves it anew
    monkeypatch.setattr(lv, "RECIPE", lv.RECIPE + 1)
    assert lv.read_record(tmp_path, "cpu-a", "in-process") is None


def test_a_recorded_crash_skips_that_build_without_retrying_it(tmp_path, monkeypatch):
    """The builder goes straight to the next variant; it never compiles or runs the one that died."""
    builder = RuntimeBuilder(Path(sys.executable), tmp_path / "llama_cpp_python-0.3.36.tar.gz", tmp_path,
                             with_server=False, log=lambda m: None, cpu_flags=HASWELL, machine="x86_64", gpu_args=[])
    first, second = builder.variants()
    lv.write_record(tmp_path / "wheels" / first.cache_name, builder.key,
                    lv.Proof("in-process", False, "killed by SIGILL", "SIGILL"))
    tried = []
    monkeypatch.setattr(builder, "_try", lambda variant, folder: tried.append(variant.name) or
                        lv.Proof("in-process", False, "x"))
    with pytest.raises(SystemExit, match="no llama.cpp build runs on this CPU"):
        builder.ensure()
    assert tried == [second.name]


def test_the_installed_build_holds_no_amx_instruction():
    """What the recipe promises, read off the binary: no AMX tile instruction (the native build had 88)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    library = Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so"
    if not library.is_file():
        pytest.skip(f"{library} not found")
    code = subprocess.run(["objdump", "-d", str(library)], capture_output=True, text=True, timeout=120).stdout
    assert "vfmadd" in code  # the disassembly is real
    assert "tilezero" not in code and "tdpbssd" not in code


@pytest.mark.slow
def test_the_installed_build_passes_the_proof_in_process_and_in_llama_server(tmp_path):
    """The real check setup runs, on this CPU, with the build `make setup` installed."""
    pytest.importorskip("llama_cpp")
    server = Path(sys.prefix) / "bin" / "llama-server"
    if not server.is_file():
        pytest.skip("no llama-server in this environment (make setup builds one)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tilescribe" / "proof-models"
    for engine, binary in (("in-process", None), ("server", server)):
        proof = lv.prove(Path(sys.executable), engine, cache, os.environ, binary)
        assert proof.ok, proof.detail
        assert [check["quant"] for check in proof.checks] == ["Q4_K_M", "Q8_0"]
        assert all(check["prompt_tokens"] > 256 for check in proof.checks)  # a batched prompt, as a tile's
    stamp = read_stamp(Path(sys.prefix))
    if stamp:  # what make setup recorded: which build runs, and why
        assert stamp["variant"] and all(proof["ok"] for proof in stamp["proofs"])


# qemu-x86_64 models an older CPU than the installed build was made for, and which
# instruction class that build uses and the model lacks (TCG implements up to AVX2).
OLDER_CPU = {"avx512": ("Haswell", "AVX-512"), "avx2": ("Nehalem", "AVX/AVX2")}


def test_a_build_for_a_richer_cpu_dies_in_the_proof_on_an_emulated_older_one(tmp_path):
    """The crash class of issue 18 without the machine: the installed build, run by setup's own
    proof on an emulated CPU that lacks its instructions, is classified as killed by SIGILL
    (so setup would record it and build the next variant down), not hung or passed."""
    pytest.importorskip("llama_cpp")
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (make setup installs qemu-user as root)")
    stamp = read_stamp(Path(sys.prefix))
    if stamp.get("variant") not in OLDER_CPU:
        pytest.skip(f"the installed build ({stamp.get('variant') or 'not recorded by make setup'}) "
                    "has no older CPU to emulate")
    model, lacks = OLDER_CPU[stamp["variant"]]
    python = tmp_path / "python-under-qemu"
    python.write_text(f'#!/bin/sh\nexec "{qemu}" -cpu {model} "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tilescribe" / "proof-models"
    proof = lv.prove(python, "in-process", cache, os.environ, timeout=600)
    assert not proof.ok, f"the {stamp['variant']} build ran on an emulated {model} without {lacks}"
    assert proof.signal == "SIGILL" and proof.detail.startswith("killed by SIGILL"), proof.detail
