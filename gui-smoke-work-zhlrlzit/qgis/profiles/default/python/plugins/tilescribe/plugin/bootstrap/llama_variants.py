"""Which llama.cpp builds to try on this CPU, best first, and the child-process proof of each.

Why not `-DGGML_NATIVE=ON` (what we did before): on an Intel Xeon with AMX (4th generation and
later) a native build of llama.cpp 0.3.36 compiles the AMX kernels, which die with SIGILL
(`tilezero`) as soon as a quantized model runs a batched matrix product, in process and in
llama-server alike (upstream pull request 26954: the tile-data permission is requested on the
main thread only, and a tile config the compiler drops). `-mno-amx-*` does not help, since
`-march=native` comes later on the command line. So each variant names its instruction sets
explicitly, AMX always off, and the list goes from the fastest this CPU supports down to a
portable baseline. A variant is used only after `runtime_proof` captioned an image with
quantized models in a child process on this very CPU; one that dies is recorded, with its
signal, and never tried again on this CPU.

Stdlib only: QGIS's Python runs it (the plugin's setup) as well as scripts/setup.sh.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

# Bump when how a variant is built changes: cache folders carry it, so a build made by an
# older recipe (e.g. the -march=native one that crashed) is never reused.
RECIPE = 2
PROOF_MODULE = "tilescribe.plugin.core.captioning.runtime_proof"
PROOF_TIMEOUT_S = 900
_AMX_OFF = ("-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF")
_AVX512_PARTS = (("avx512vbmi", "-DGGML_AVX512_VBMI=ON"), ("avx512_vnni", "-DGGML_AVX512_VNNI=ON"),
                 ("avx512_bf16", "-DGGML_AVX512_BF16=ON"))
_AVX512_CORE = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
_AVX2_CORE = {"avx", "avx2", "fma", "f16c"}


@dataclass(frozen=True)
class Variant:
    name: str              # avx512, avx2, baseline (x86-64); native, portable (other CPUs)
    cmake_args: tuple
    why: str               # one line the user reads: why this build, and what it gives up

    @property
    def cache_name(self) -> str:
        """The folder of this build in the caches: name, recipe and a hash of the exact flags."""
        digest = hashlib.sha256(" ".join(self.cmake_args).encode("utf-8")).hexdigest()[:8]
        return f"{self.name}-r{RECIPE}-{digest}"

    @property
    def cmake_string(self) -> str:
        return " ".join(self.cmake_args)


def cpu_flags_set(cpu_flags: str) -> set:
    """/proc/cpuinfo's `flags : a b c` line (or just the words) as a set."""
    return set(cpu_flags.split(":", 1)[-1].split())


def cpu_variants(cpu_flags: str, machine: str, gpu_args: Sequence[str] = ()) -> list:
    """The builds to try, best first; the last one runs on any CPU of this architecture."""
    variants = _cpu_variants(cpu_flags, machine, tuple(gpu_args))
    backends = [arg[len("-DGGML_"):-len("=ON")].lower() for arg in gpu_args if arg.endswith("=ON")]
    if not backends:
        return variants
    suffix = "-" + "-".join(backends)  # a GPU build is another binary: its own folder and proof
    return [Variant(v.name + suffix, v.cmake_args, v.why) for v in variants]


def _cpu_variants(cpu_flags: str, machine: str, gpu: tuple) -> list:
    if machine.lower() not in ("x86_64", "amd64", "i686", "x86"):
        return [Variant("native", ("-DGGML_NATIVE=ON", *gpu), "built for this CPU"),
                Variant("portable", ("-DGGML_NATIVE=OFF", *gpu), "portable: the native build failed its check")]
    flags = cpu_flags_set(cpu_flags)
    amx = bool({"amx_tile", "amx_int8", "amx_bf16"} & flags)
    variants = []
    if _AVX2_CORE <= flags:
        avx2 = ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
                "-DGGML_BMI2=" + ("ON" if "bmi2" in flags else "OFF"),
                "-DGGML_AVX_VNNI=" + ("ON" if "avx_vnni" in flags else "OFF"))
        if _AVX512_CORE <= flags:
            extra = tuple(arg for flag, arg in _AVX512_PARTS if flag in flags)
            why = ("AVX-512 without AMX (llama.cpp's AMX kernels die with SIGILL on this CPU class: "
                   "upstream PR 26954)" if amx else "AVX-512")
            variants.append(Variant("avx512", (*avx2, "-DGGML_AVX512=ON", *extra, *_AMX_OFF, *gpu), why))
        variants.append(Variant("avx2", (*avx2, "-DGGML_AVX512=OFF", *_AMX_OFF, *gpu),
                                "AVX2" + (": a faster build failed its check here" if variants else "")))
    baseline = ("-DGGML_NATIVE=OFF", "-DGGML_SSE42=OFF", "-DGGML_AVX=OFF", "-DGGML_AVX2=OFF", "-DGGML_FMA=OFF",
                "-DGGML_F16C=OFF", "-DGGML_BMI2=OFF", "-DGGML_AVX512=OFF", *_AMX_OFF, *gpu)
    variants.append(Variant("baseline", baseline, "x86-64 baseline (SSE only; slow)" +
                            (": every faster build failed its check here" if variants else "")))
    return variants


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first `flags` (x86) or `Features` (ARM) line of /proc/cpuinfo; "" elsewhere."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def cpu_key(cpu_flags: str, machine: str) -> str:
    """Proofs are per CPU: sha256 of the flags line (or the machine name), 12 hex digits."""
    return hashlib.sha256((cpu_flags or machine).encode("utf-8")).hexdigest()[:12]


# -- the proof: a child process that captions with quantized models ---------------------------

@dataclass
class Proof:
    engine: str                  # "in-process" or "server"
    ok: bool
    detail: str                  # one line: what passed, or how it died
    signal: Optional[str] = None  # SIGILL, SIGSEGV, SIGABRT... when a native crash killed it
    checks: tuple = ()

    def to_dict(self) -> dict:
        return {"engine": self.engine, "ok": self.ok, "detail": self.detail, "signal": self.signal,
                "checks": list(self.checks), "recipe": RECIPE, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}


def signal_name(returncode: int) -> Optional[str]:
    """SIGILL for -4 (Popen's way of saying a signal ended the child); None for a normal exit."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def prove(python: Path, engine: str, models: Path, env: Mapping[str, str],
          server: Optional[Path] = None, timeout: float = PROOF_TIMEOUT_S) -> Proof:
    """Run runtime_proof in a child process with `python` and classify how it ended."""
    argv = [str(python), "-m", PROOF_MODULE, "--engine", engine, "--models", str(models)]
    if server is not None:
        argv += ["--llama-server", str(server)]
    try:
        run = subprocess.run(argv, capture_output=True, text=True, env=dict(env), timeout=timeout)
    except subprocess.TimeoutExpired:
        return Proof(engine, False, f"the check did not finish within {timeout:.0f} s")
    except OSError as exc:
        return Proof(engine, False, f"the check could not start: {exc}")
    died = signal_name(run.returncode)
    tail = [line for line in (run.stderr or "").splitlines() if line.strip()][-6:]
    if died:  # the child itself (in process: llama.cpp in our Python) was killed
        said = [line for line in tail if "Fatal Python error" in line or "error" in line.lower()]
        return Proof(engine, False, f"killed by {died}" + (f": {said[-1][:160]}" if said else ""), died)
    try:
        result = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = {}
    if run.returncode == 0 and result.get("ok"):
        quants = "+".join(check["quant"] for check in result.get("checks", []))
        return Proof(engine, True, f"captioned with {quants}", None, tuple(result.get("checks", [])))
    server_exit = result.get("server_exit")
    died = signal_name(server_exit) if isinstance(server_exit, int) else None
    detail = result.get("detail") or " | ".join(tail[-3:])
    return Proof(engine, False, (f"llama-server killed by {died}: " if died else f"exit {run.returncode}: ") +
                 str(detail)[:400], died, tuple(result.get("checks", [])))


def record_path(folder: Path, key: str, engine: str) -> Path:
    return Path(folder) / f"proof-{key}-{engine}.json"


def read_record(folder: Path, key: str, engine: str) -> Optional[dict]:
    try:
        record = json.loads(record_path(folder, key, engine).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("recipe") == RECIPE else None


def write_record(folder: Path, key: str, proof: Proof) -> None:
    path = record_path(folder, key, proof.engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(proof.to_dict(), indent=1), encoding="utf-8")
    tmp.replace(path)
