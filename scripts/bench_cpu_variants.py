"""What each llama.cpp CPU build costs here, and which ones crash: one table, one run.

Only llama.cpp's CPU backend (libggml-cpu) depends on the instruction sets, so for each
variant this builds that one library with the variant's flags (cached), lays it over a
copy of the installed llama_cpp package, runs setup's child-process proof with it (a
build that dies shows here with its signal, exactly as setup would record it) and, when it
passes, times prompt and generation tokens/s on a real-size random-weight model in a
child process. `--with-native` adds the old `-DGGML_NATIVE=ON` recipe, to show what the
proof does with it on a CPU with AMX.

Another CPU, emulated: `--emulate-cpu MODEL` runs each proof under `qemu-x86_64 -cpu MODEL`
(Debian's qemu-user; TCG implements AVX2 but no AVX-512, AVX-VNNI or AMX), and `--cpu-flags`
lists the variants setup would choose on that CPU instead of this one's. So an AVX2-only
machine's choice is shown here: this CPU's builds die in the proof, that CPU's avx2 passes.
Emulated runs are not timed (TCG's speed says nothing about a real CPU's).

    .venv/bin/python scripts/bench_cpu_variants.py --shape 3b --with-native --format json
    .venv/bin/python scripts/bench_cpu_variants.py --emulate-cpu Haswell \
        --cpu-flags "sse4_2 avx avx2 fma f16c bmi2" --also-host-builds --format json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tilescribe.plugin.bootstrap.llama_build import read_cpu_flags
from tilescribe.plugin.bootstrap.llama_variants import Variant, cpu_variants, prove

CACHE = Path(os.environ.get("TILESCRIBE_CACHE") or Path.home() / ".cache" / "tilescribe")
NATIVE = Variant("native", ("-DGGML_NATIVE=ON",), "the old recipe (-march=native, AMX kernels included)")

# Runs in the child with the variant's library: prompt and generation speed, llama-bench style.
TIMING = r"""
import json, sys, time
import llama_cpp
model, prompt_tokens, gen_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=prompt_tokens + gen_tokens + 8, n_batch=512, n_threads=threads,
                      verbose=False, seed=1)
tokens = [(7 * i + 11) % 30000 + 100 for i in range(prompt_tokens)]
t0 = time.perf_counter(); llm.eval(tokens); t1 = time.perf_counter()
for i in range(gen_tokens):
    llm.eval([(13 * i + 5) % 30000 + 100])
t2 = time.perf_counter()
llm.close()
print(json.dumps({"prompt_tok_s": round(prompt_tokens / (t1 - t0), 2), "gen_tok_s": round(gen_tokens / (t2 - t1), 2)}))
"""


def build_cpu_library(variant: Variant, sdist: Path, log) -> Path:
    out = CACHE / "ggml-cpu" / variant.cache_name / "libggml-cpu.so"
    if out.is_file():
        return out
    wheel = next((CACHE / "wheels" / variant.cache_name).glob("llama_cpp_python-*.whl"), None)
    if wheel is not None:  # setup compiled this variant already: its wheel holds the library
        import zipfile

        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith("lib/libggml-cpu.so"))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(archive.read(name))
        return out
    log(f"building libggml-cpu ({variant.name}) into {out.parent}")
    with tempfile.TemporaryDirectory(prefix="tilescribe-ggml-cpu-") as src:
        with tarfile.open(sdist) as tar:
            tar.extractall(src)
        tree = next(Path(src).glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
        build = tree / "build"
        subprocess.run(["cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
                        *variant.cmake_args], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "ggml-cpu", "-j", str(os.cpu_count() or 2)],
                       check=True, stdout=subprocess.DEVNULL)
        out.parent.mkdir(parents=True, exist_ok=True)
        built = next((build / "bin").glob("libggml-cpu.so*"))
        shutil.copy2(built, out)
    return out


def overlay(library: Path, folder: Path) -> dict:
    """A copy of the installed llama_cpp with this libggml-cpu: PYTHONPATH puts it first."""
    import llama_cpp

    package = Path(llama_cpp.__file__).parent
    target = folder / "llama_cpp"
    shutil.copytree(package, target, symlinks=False)
    for old in (target / "lib").glob("libggml-cpu.so*"):
        old.unlink()
        shutil.copy2(library, old)
    repo = Path(__file__).resolve().parents[1]
    paths = [str(folder), str(repo.parent) if repo.name == "tilescribe" else ""]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def time_variant(env: dict, model: Path, args) -> dict:
    run = subprocess.run([sys.executable, "-c", TIMING, str(model), str(args.prompt_tokens), str(args.gen_tokens),
                          str(args.threads)], capture_output=True, text=True, env=env, timeout=3600)
    if run.returncode != 0:
        return {"error": f"exit {run.returncode}: {run.stderr.strip().splitlines()[-1:]}"}
    return json.loads(run.stdout.strip().splitlines()[-1])


def emulated_python(cpu_model: str, folder: Path) -> Path:
    """An executable that runs this Python under qemu-x86_64 as `cpu_model` (prove() takes a path)."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        raise SystemExit("--emulate-cpu needs qemu-x86_64: apt-get install qemu-user (make setup installs it)")
    wrapper = folder / "python-under-qemu"
    wrapper.write_text(f'#!/bin/sh\nexec "{qemu}" -cpu "{cpu_model}" "{sys.executable}" "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="3b", help="bench-caption's shape to time (default 3b)")
    parser.add_argument("--with-native", action="store_true", help="also the old -DGGML_NATIVE=ON recipe")
    parser.add_argument("--variants", nargs="*", help="only these variants (default: all for this CPU)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="times each variant is timed, interleaved")
    parser.add_argument("--emulate-cpu", metavar="MODEL",
                        help="run the proofs under qemu-x86_64 -cpu MODEL (e.g. Haswell); nothing is timed")
    parser.add_argument("--cpu-flags", metavar="FLAGS",
                        help="choose the variants for this /proc/cpuinfo flags line instead of this CPU's")
    parser.add_argument("--also-host-builds", action="store_true",
                        help="with --cpu-flags: also prove the builds setup makes for this CPU")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    args = parser.parse_args()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    sdist = next((CACHE / "sdist").glob("llama_cpp_python-*.tar.gz"))
    host = [(v, "this CPU") for v in cpu_variants(read_cpu_flags(), os.uname().machine)]
    if args.cpu_flags:
        variants = [(v, "the given flags") for v in cpu_variants(args.cpu_flags, "x86_64")]
        if args.also_host_builds:
            chosen = {v.cache_name for v, _ in variants}
            variants = [pair for pair in host if pair[0].cache_name not in chosen] + variants
    else:
        variants = host
    if args.variants:
        variants = [(v, made_for) for v, made_for in variants if v.name in args.variants]
    if args.with_native:
        variants.insert(0, (NATIVE, "this CPU"))
    from tilescribe.devtools.bench.shaped_gguf import shaped_pair

    model = None if args.emulate_cpu else shaped_pair(args.shape, log=log)[0]
    rows, envs, folders = [], {}, []
    scratch = tempfile.TemporaryDirectory(prefix="tilescribe-emulated-")
    folders.append(scratch)
    python = emulated_python(args.emulate_cpu, Path(scratch.name)) if args.emulate_cpu else Path(sys.executable)
    for variant, made_for in variants:  # build and prove each once
        library = build_cpu_library(variant, sdist, log)
        folder = tempfile.TemporaryDirectory(prefix="tilescribe-variant-")
        folders.append(folder)
        env = dict(overlay(library, Path(folder.name)), OMP_WAIT_POLICY="PASSIVE")
        started = time.monotonic()
        proof = prove(python, "in-process", CACHE / "proof-models", env)
        rows.append({"variant": variant.name, "build": variant.cache_name, "made_for": made_for,
                     "runs_on": f"qemu -cpu {args.emulate_cpu}" if args.emulate_cpu else "this CPU",
                     "proof": "passed" if proof.ok else proof.detail[:120],
                     "signal": proof.signal, "proof_s": round(time.monotonic() - started, 1), "runs": []})
        log(json.dumps(rows[-1]))
        if proof.ok and model is not None:
            envs[variant.name] = env
    for round_number in range(args.rounds):  # interleaved (A B C A B C): the machine's drift hits all alike
        for row in rows:
            if row["variant"] in envs:
                log(f"round {round_number + 1}: timing {row['variant']} on the {args.shape} shape")
                row["runs"].append(time_variant(envs[row["variant"]], model, args))
                log(json.dumps(row["runs"][-1]))
    for row in rows:
        good = [run for run in row["runs"] if "error" not in run]
        for key in ("prompt_tok_s", "gen_tok_s"):
            values = [run[key] for run in good]
            if values:
                row[key] = round(statistics.median(values), 2)
                row[key + "_range"] = [min(values), max(values)]
    for folder in folders:
        folder.cleanup()
    if args.format == "json":
        print(json.dumps({"shape": args.shape, "emulated_cpu": args.emulate_cpu, "threads": args.threads,
                          "prompt_tokens": args.prompt_tokens,
                          "gen_tokens": args.gen_tokens, "rounds": args.rounds, "rows": rows}, indent=1))
    else:
        print("variant | made for | runs on | proof | prompt tok/s (median, range) | generation tok/s (median, range)")
        for row in rows:
            prompt = f"{row.get('prompt_tok_s', '-')} {row.get('prompt_tok_s_range', '')}"
            generation = f"{row.get('gen_tok_s', '-')} {row.get('gen_tok_s_range', '')}"
            print(f"{row['variant']} | {row['made_for']} | {row['runs_on']} | {row['proof']} | {prompt} | {generation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
