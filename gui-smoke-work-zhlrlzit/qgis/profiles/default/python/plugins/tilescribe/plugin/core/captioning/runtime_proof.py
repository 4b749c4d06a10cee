"""Prove that this machine's llama.cpp build runs quantized models: the child side of setup's check.

A build that passes on one CPU can die on another (SIGILL in llama.cpp's AMX kernels on recent
Xeons, RECIPES.md "Native builds"), and only when a *quantized* model of realistic width runs
a batched matrix product. So this writes small random-weight pairs in Q4_K_M and Q8_0 whose
widths reach those kernels (512-wide layers, a prompt of a few hundred tokens, a projector)
and captions one image with each, in this process or through llama-server. It is run in a
child process by `plugin/bootstrap/llama_build.py`: a native crash kills the child, whose
signal the parent records, never the caller.

    python -m tilescribe.plugin.core.captioning.runtime_proof --engine in-process
    python -m tilescribe.plugin.core.captioning.runtime_proof --engine server --llama-server PATH

Prints one JSON line: {"ok": true, "engine", "checks": [{"quant", "prompt_tokens", ...}]}.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from .tiny_gguf import _add_vocab, write_gguf, write_tiny_mmproj

FORMAT_VERSION = 1
# Wide enough for the batched kernels (AMX wants rows in multiples of 32 and K-quant blocks
# of 256), small enough to write and quantize in about a second.
WIDTH, LAYERS, FFN, HEADS = 512, 2, 1536, 8
QUANTS = ("Q4_K_M", "Q8_0")
ANSWER_TOKENS = 8
# Repeated so the prompt is a few hundred tokens: one batch of many rows, as a real tile's prompt.
PROMPT = "Describe this aerial image: fields, roads, rivers, buildings, forest, water. " * 6


def proof_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """[(quant, model, mmproj)]: written once into `folder` (quantized by the llama.cpp under test)."""
    folder = folder / f"proof-v{FORMAT_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    mmproj = folder / f"proof-mmproj-{WIDTH}.gguf"
    if not mmproj.is_file():
        write_tiny_mmproj(mmproj, WIDTH)
    f32 = folder / "proof-text-f32.gguf"
    pairs = []
    for quant in QUANTS:
        model = folder / f"proof-text-{quant}.gguf"
        if not model.is_file():
            if not f32.is_file():
                write_gguf(f32, "llama", _fill_text)
            quantize(f32, model, quant)
        pairs.append((quant, model, mmproj))
    f32.unlink(missing_ok=True)
    return pairs


def _fill_text(writer) -> None:
    writer.add_name("tilescribe-runtime-proof (random weights, meaningless output)")
    writer.add_context_length(4096)
    writer.add_embedding_length(WIDTH)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)
    n_vocab = _add_vocab(writer)
    rng = np.random.default_rng(11)
    shapes = [("token_embd.weight", (n_vocab, WIDTH)), ("output_norm.weight", (WIDTH,)),
              ("output.weight", (n_vocab, WIDTH))]
    for i in range(LAYERS):
        shapes += [(f"blk.{i}.attn_norm.weight", (WIDTH,)), (f"blk.{i}.ffn_norm.weight", (WIDTH,))]
        shapes += [(f"blk.{i}.{p}.weight", (WIDTH, WIDTH)) for p in ("attn_q", "attn_k", "attn_v", "attn_output")]
        shapes += [(f"blk.{i}.ffn_gate.weight", (FFN, WIDTH)), (f"blk.{i}.ffn_up.weight", (FFN, WIDTH)),
                   (f"blk.{i}.ffn_down.weight", (WIDTH, FFN))]
    for name, shape in shapes:
        values = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
        writer.add_tensor(name, values + np.float32(1.0) if "norm" in name else values)


def quantize(src: Path, dst: Path, quant: str = "Q4_K_M") -> None:
    """Quantize a GGUF with the llama.cpp under test (written beside, then renamed into place)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = os.cpu_count() or 1
    tmp = dst.with_name(dst.name + ".part")
    code = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if code != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not quantize {src} to {quant} (code {code})")
    os.replace(tmp, dst)


def image_uri() -> str:
    """A 32 x 32 PNG (the projector's input size) as a data URI; stdlib only."""
    import struct
    import zlib

    raw = b"".join(b"\x00" + b"".join(bytes((x * 8, y * 8, (x * y) % 256)) for x in range(32)) for y in range(32))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _messages() -> list:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_uri()}},
                                         {"type": "text", "text": PROMPT}]}]


def prove_in_process(quant: str, model: Path, mmproj: Path, threads: int) -> dict:
    import llama_cpp
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    started = time.monotonic()
    handler = Llava15ChatHandler(clip_model_path=str(mmproj), verbose=False)
    llm = llama_cpp.Llama(model_path=str(model), chat_handler=handler, n_ctx=2048, n_batch=512,
                          n_threads=threads, seed=1, verbose=False)
    try:
        eos = llm.token_eos()
        answer = llm.create_chat_completion(messages=_messages(), max_tokens=ANSWER_TOKENS, temperature=0.0,
                                            logit_bias={eos: -1e9} if eos >= 0 else None)
    finally:
        llm.close()
    usage = answer.get("usage") or {}
    return {"quant": quant, "prompt_tokens": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"), "seconds": round(time.monotonic() - started, 2)}


def prove_server(quant: str, model: Path, mmproj: Path, binary: Path, threads: int) -> dict:
    from .llama_server import LlamaServer, ServerOptions

    started = time.monotonic()
    server = LlamaServer(binary, ServerOptions(model, mmproj, slots=1, ctx_per_slot=2048, threads=threads,
                                               chat_template="vicuna"), health_timeout_s=120)
    try:
        server.start()  # llama-server decodes a warm-up batch while loading: a crash shows here
        body = json.dumps({"messages": _messages(), "max_tokens": ANSWER_TOKENS, "temperature": 0,
                           "ignore_eos": True}).encode("utf-8")
        request = urllib.request.Request(server.url + "/v1/chat/completions", data=body, headers={
            "Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=120) as response:
            answer = json.loads(response.read())
    except Exception as exc:
        raise ServerDied(_server_exit(server, exc), f"{type(exc).__name__}: {exc}") from None
    finally:
        server.close()
    usage = answer.get("usage") or {}
    return {"quant": quant, "prompt_tokens": usage.get("prompt_tokens"),
            "output_tokens": usage.get("completion_tokens"), "seconds": round(time.monotonic() - started, 2)}


class ServerDied(RuntimeError):
    def __init__(self, returncode, message: str):
        super().__init__(message)
        self.returncode = returncode


def _server_exit(server, exc: Exception):
    """llama-server's exit status (negative: the signal that killed it), or None while it runs."""
    process = server.process
    if process is not None:
        try:
            return process.wait(10)
        except Exception:  # still running: the failure was something else
            return None
    match = re.search(r"exit status (-?\d+)", str(exc))  # it died while loading (LlamaServer's message)
    return int(match.group(1)) if match else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("in-process", "server"), required=True)
    parser.add_argument("--llama-server", type=Path, help="the llama-server binary to prove (--engine server)")
    parser.add_argument("--models", type=Path, required=True, help="folder for the proof models (kept)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if args.engine == "server" and args.llama_server is None:
        parser.error("--engine server needs --llama-server")
    checks = []
    try:
        for quant, model, mmproj in proof_pairs(args.models):
            if args.engine == "in-process":
                checks.append(prove_in_process(quant, model, mmproj, args.threads))
            else:
                checks.append(prove_server(quant, model, mmproj, args.llama_server, args.threads))
    except ServerDied as exc:
        print(json.dumps({"ok": False, "engine": args.engine, "checks": checks, "detail": str(exc),
                          "server_exit": exc.returncode}), flush=True)
        return 3
    print(json.dumps({"ok": True, "engine": args.engine, "checks": checks}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
