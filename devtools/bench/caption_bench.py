"""bench-caption: seconds per tile of the model step at real size, per engine setting, in one run.

A random-weight GGUF pair with a real model's shapes (shaped_gguf) captions real tiles,
rendered exactly as `index` renders them, with the real prompt and JSON schema. Random
weights never finish an answer by themselves, so each answer is held to a realistic
length (`answer_tokens`, ~800 for 5 variants of a real model). Every setting runs in
the same process one after the other, so their figures compare on the same machine load.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from ...plugin.core.captioning.prompt import build_messages, response_schema
from ...plugin.core.raster.rendering import RenderSettings, choose_bands, render_tile_png
from ...plugin.core.raster.tiling import TileGrid, content_skip_reason, open_raster, read_info, read_window

REALISTIC_ANSWER_TOKENS = 800  # 5 variants x 3 real fields, SmolLM2/Llama BPE (RECIPES.md)
WARM_UP_TOKENS = 8  # one short answer per setting before timing: buffers allocated, cache filled


@dataclass
class SettingResult:
    engine: str  # "llama-cpp-python" or "llama-server"
    slots: int
    shape: str
    tiles: int
    wall_s: float
    s_per_tile: float
    tiles_per_hour: float
    prompt_tokens: float  # per tile, image positions included
    cached_prompt_tokens: float  # per tile, reused from the previous tile's prompt
    output_tokens: float  # per tile
    encode_s: Optional[float]  # per tile; llama-server counts it inside prompt_s
    prompt_s: float
    generate_s: float
    message_order: str = "instructions-first"
    build: str = ""


def bench_tiles(raster: Path, count: int, tile_size: int = 512) -> list[bytes]:
    """The first `count` content tiles of `raster`, rendered to PNG as `index` does."""
    pngs: list[bytes] = []
    render = RenderSettings()
    with open_raster(raster) as dataset:
        info = read_info(dataset)
        bands = list(choose_bands(dataset.colorinterp, dataset.count, None))
        for window in TileGrid(info.width, info.height, tile_size, 0).windows():
            data = read_window(dataset, window, bands)
            if not content_skip_reason(data):
                pngs.append(render_tile_png(data, render))
            if len(pngs) == count:
                break
    return pngs


def warm_up_png(pngs: Sequence[bytes]) -> bytes:
    """A tile that is none of the timed ones: the first tile upside down."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(pngs[0])).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def bench_in_process(model: Path, mmproj: Path, pngs: Sequence[bytes], *, shape: str, variants: int,
                     answer_tokens: int, threads: Optional[int], family: str = "auto") -> SettingResult:
    """llama-cpp-python in this process, one tile after the other (today's default engine)."""
    import llama_cpp

    from ...plugin.core.captioning.engine_info import llama_cpp_device
    from ...plugin.core.captioning.llama_backend import LlamaCppCaptioner

    captioner = LlamaCppCaptioner(model, mmproj, family=family, n_threads=threads, n_variants=variants,
                                  force_answer_tokens=WARM_UP_TOKENS, max_attempts=1)
    try:
        captioner._generate(warm_up_png(pngs), variants, 0)  # warm-up, as for the server: one-time setup
        captioner.force_answer_tokens = answer_tokens
        ctx = captioner._llm._ctx.ctx  # llama.cpp's own per-stage timers
        totals = {"prompt_tokens": 0, "output_tokens": 0, "encode_s": 0.0, "prompt_s": 0.0, "generate_s": 0.0}
        started = time.perf_counter()
        for png in pngs:
            llama_cpp.llama_perf_context_reset(ctx)
            t0 = time.perf_counter()
            captioner._generate(png, variants, 0)
            wall = time.perf_counter() - t0
            perf = llama_cpp.llama_perf_context(ctx)
            prompt_s, generate_s = perf.t_p_eval_ms / 1000, perf.t_eval_ms / 1000
            totals["prompt_tokens"] += captioner.last_stats.get("prompt_tokens", 0)
            totals["output_tokens"] += captioner.last_stats.get("completion_tokens", 0)
            totals["prompt_s"] += prompt_s
            totals["generate_s"] += generate_s
            # The rest of the call: the vision encoder, plus sampling under the grammar.
            totals["encode_s"] += max(wall - prompt_s - generate_s, 0.0)
        wall = time.perf_counter() - started
        return _result("llama-cpp-python", 1, shape, len(pngs), wall, totals, cached=0.0,
                       build=f"llama-cpp-python {llama_cpp.__version__}, {llama_cpp_device()}")
    finally:
        captioner.close()


def bench_server(model: Path, mmproj: Path, pngs: Sequence[bytes], *, shape: str, variants: int,
                 answer_tokens: int, slots: int, threads: Optional[int], image_first: bool = False,
                 family: str = "auto") -> SettingResult:
    """The managed llama-server with `slots` tiles decoded together."""
    from ...plugin.core.captioning.server_engine import LlamaServerCaptioner

    captioner = LlamaServerCaptioner(model, mmproj, family=family, slots=slots, n_threads=threads,
                                     n_variants=variants)
    try:
        # One-time setup, and the instructions into the prompt cache (a tile not timed: a timed
        # tile already seen would be served from the cache image and all).
        warm = _Asker(captioner, variants, WARM_UP_TOKENS, image_first, captioner.family)
        ask = _Asker(captioner, variants, answer_tokens, image_first, captioner.family)
        with ThreadPoolExecutor(max_workers=slots) as pool:
            list(pool.map(warm, [warm_up_png(pngs)] * slots))  # every slot once
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=slots) as pool:
            timings = list(pool.map(ask, pngs))
        wall = time.perf_counter() - started
        totals = {
            "prompt_tokens": sum(t.get("prompt_n", 0) + t.get("cache_n", 0) for t in timings),
            "output_tokens": sum(t.get("predicted_n", 0) for t in timings),
            "encode_s": None, "prompt_s": sum(t.get("prompt_ms", 0) for t in timings) / 1000,
            "generate_s": sum(t.get("predicted_ms", 0) for t in timings) / 1000,
        }
        result = _result("llama-server", slots, shape, len(pngs), wall, totals,
                         cached=sum(t.get("cache_n", 0) for t in timings) / len(pngs), build=captioner.build)
        result.message_order = "image-first" if image_first else "instructions-first"
        return result
    finally:
        captioner.close()


class _Asker:
    """One chat request per tile, as the HTTP backend sends it, keeping llama-server's timings."""

    def __init__(self, captioner, variants: int, answer_tokens: int, image_first: bool, family: str = "auto"):
        self.url = captioner.server.url + "/v1/chat/completions"
        self.key, self.variants, self.answer_tokens = captioner.server.api_key, variants, answer_tokens
        self.max_len, self.image_first, self.family = captioner.plan.max_len, image_first, family
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.lock = threading.Lock()

    def __call__(self, png: bytes) -> dict:
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        # The family's own message order (as the HTTP backend sends it), or image first when asked.
        messages = build_messages(uri, self.variants, "minicpm-v-2.6" if self.image_first else self.family)
        body = {"model": "tilescribe", "messages": messages, "temperature": 0.3, "seed": 0,
                "max_tokens": self.answer_tokens,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "captions", "schema": response_schema(self.variants, self.max_len)}}}
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        with self.opener.open(request, timeout=3600) as response:
            return json.loads(response.read()).get("timings", {})


def _result(engine, slots, shape, tiles, wall, totals, *, cached, build) -> SettingResult:
    per = lambda key: totals[key] / tiles if totals[key] is not None else None  # noqa: E731
    return SettingResult(
        engine=engine, slots=slots, shape=shape, tiles=tiles, wall_s=round(wall, 1),
        s_per_tile=round(wall / tiles, 2), tiles_per_hour=round(3600 * tiles / wall, 1),
        prompt_tokens=round(per("prompt_tokens"), 1), cached_prompt_tokens=round(cached, 1),
        output_tokens=round(per("output_tokens"), 1),
        encode_s=None if per("encode_s") is None else round(per("encode_s"), 2),
        prompt_s=round(per("prompt_s"), 2), generate_s=round(per("generate_s"), 2), build=build)


def as_dicts(results: Sequence[SettingResult]) -> list[dict]:
    return [asdict(r) for r in results]
