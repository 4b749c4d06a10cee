"""bench-caption: seconds per tile of the model step at real size, per engine setting, in one run.

A random-weight GGUF pair with a real model's shapes (shaped_gguf) captions real tiles,
rendered exactly as `index` renders them, with the real prompt and JSON schema. Random
weights never finish an answer by themselves, so each answer is held to a realistic
length (`answer_tokens`, ~160 a variant of a real model) and to exactly that length in
every engine (bench_max_len says how). The command runs its settings interleaved and
repeated (A B A B) in one process, so each compares on the same machine load, and reports
each setting's spread over the rounds (summarize).
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

from . import TOKENS_PER_VARIANT  # noqa: F401 (the answer length per variant; re-exported)

WARM_UP_TOKENS = 8  # one short answer per setting before timing: buffers allocated, cache filled
WARM_UP_SIDE = 64  # px: the warm-up tile's size (warm_up_png)
# Random weights pick long tokens (9-11 characters each for the 3B shape, from an earlier run:
# the default 7,000-character bounds of 5 variants closed the JSON after 654 tokens in process and
# 767 in llama-server, whose samplers pick other tokens). Bounds for this many characters per token
# keep the grammar open until max_tokens stops both engines at exactly answer_tokens.
CHARS_PER_TOKEN_BOUND = 16
# llama.cpp's grammar parser refuses a string bound above about 1,000 characters ("repetitions
# exceed sane defaults": 2,000 repeated rules), and llama-cpp-python then crashes: no field goes above.
FIELD_BOUND_LIMIT = 1000


def bench_max_len(answer_tokens: int, variants: int) -> dict:
    """The answer schema's field bounds for a benchmark: the real ones (DEFAULT_MAX_LEN) scaled
    up until the JSON cannot close before `answer_tokens`, each at most FIELD_BOUND_LIMIT (the
    schema's shape stays the real one: the same fields in the same order, as index asks).
    With 160 tokens a variant that is room for about 18 characters a token."""
    from ...plugin.core.captioning.prompt import DEFAULT_MAX_LEN

    needed = CHARS_PER_TOKEN_BOUND * answer_tokens
    factor = max(1, -(-needed // (sum(DEFAULT_MAX_LEN.values()) * variants)))  # ceiling
    bounds = {name: min(FIELD_BOUND_LIMIT, bound * factor) for name, bound in DEFAULT_MAX_LEN.items()}
    if sum(bounds.values()) * variants < needed:
        bounds = {name: FIELD_BOUND_LIMIT for name in DEFAULT_MAX_LEN}
    return bounds


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
    variants: int = 5
    output_tokens_each: tuple = ()  # every tile's answer length: all equal to answer_tokens when held
    load_average: tuple = ()  # the 1-minute load average before and after (shared machines: is it quiet?)


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
    """A tile that is none of the timed ones: the first tile upside down, WARM_UP_SIDE px wide.
    Small, so the warm-up touches every weight (the model is mmapped: its first pass reads it
    from disk or the page cache) and fills the instructions into llama-server's prompt cache
    for a fraction of a real tile's encoding (Qwen2.5-VL encodes 4 patches, not 324 tokens'
    worth); fixed-size encoders (CLIP, SigLIP) resize it to their size anyway."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(pngs[0])).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    image = image.resize((WARM_UP_SIDE, WARM_UP_SIDE))
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
    # The schema's bounds only (n_ctx stays index's): the JSON stays open until max_tokens.
    captioner.max_len = bench_max_len(answer_tokens, variants)
    try:
        captioner._generate(warm_up_png(pngs), variants, 0)  # warm-up, as for the server: one-time setup
        captioner.force_answer_tokens = answer_tokens
        ctx = captioner._llm._ctx.ctx  # llama.cpp's own per-stage timers
        totals = {"prompt_tokens": 0, "output_tokens": 0, "encode_s": 0.0, "prompt_s": 0.0, "generate_s": 0.0}
        outputs = []
        started = time.perf_counter()
        for png in pngs:
            llama_cpp.llama_perf_context_reset(ctx)
            t0 = time.perf_counter()
            captioner._generate(png, variants, 0)
            wall = time.perf_counter() - t0
            perf = llama_cpp.llama_perf_context(ctx)
            prompt_s, generate_s = perf.t_p_eval_ms / 1000, perf.t_eval_ms / 1000
            totals["prompt_tokens"] += captioner.last_stats.get("prompt_tokens", 0)
            outputs.append(captioner.last_stats.get("completion_tokens", 0))
            totals["output_tokens"] += outputs[-1]
            totals["prompt_s"] += prompt_s
            totals["generate_s"] += generate_s
            # The rest of the call: the vision encoder, plus sampling under the grammar.
            totals["encode_s"] += max(wall - prompt_s - generate_s, 0.0)
        wall = time.perf_counter() - started
        return _result("llama-cpp-python", 1, shape, len(pngs), wall, totals, cached=0.0,
                       build=f"llama-cpp-python {llama_cpp.__version__}, {llama_cpp_device()}",
                       variants=variants, outputs=outputs)
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
                         cached=sum(t.get("cache_n", 0) for t in timings) / len(pngs), build=captioner.build,
                         variants=variants, outputs=[t.get("predicted_n", 0) for t in timings])
        result.message_order = "image-first" if image_first else "instructions-first"
        return result
    finally:
        captioner.close()


class _Asker:
    """One chat request per tile, as the HTTP backend sends it, keeping llama-server's timings."""

    def __init__(self, captioner, variants: int, answer_tokens: int, image_first: bool, family: str = "auto"):
        self.url = captioner.server.url + "/v1/chat/completions"
        self.key, self.variants, self.answer_tokens = captioner.server.api_key, variants, answer_tokens
        self.image_first, self.family = image_first, family
        self.max_len = bench_max_len(answer_tokens, variants)  # as in process: open until max_tokens
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


def _result(engine, slots, shape, tiles, wall, totals, *, cached, build, variants, outputs) -> SettingResult:
    per = lambda key: totals[key] / tiles if totals[key] is not None else None  # noqa: E731
    return SettingResult(
        engine=engine, slots=slots, shape=shape, tiles=tiles, wall_s=round(wall, 1),
        s_per_tile=round(wall / tiles, 2), tiles_per_hour=round(3600 * tiles / wall, 1),
        prompt_tokens=round(per("prompt_tokens"), 1), cached_prompt_tokens=round(cached, 1),
        output_tokens=round(per("output_tokens"), 1),
        encode_s=None if per("encode_s") is None else round(per("encode_s"), 2),
        prompt_s=round(per("prompt_s"), 2), generate_s=round(per("generate_s"), 2), build=build,
        variants=variants, output_tokens_each=tuple(int(n) for n in outputs))


def summarize(rounds: Sequence[SettingResult], answer_tokens: int) -> dict:
    """One setting over its rounds: the median of each figure, and the spread of seconds per
    tile (min, median, max, and each round's) that says how far one run can be trusted."""
    import statistics

    row = asdict(rounds[0])
    for key in ("wall_s", "prompt_tokens", "cached_prompt_tokens", "output_tokens", "encode_s", "prompt_s",
                "generate_s"):
        values = [getattr(r, key) for r in rounds]
        row[key] = None if None in values else round(statistics.median(values), 2)
    seconds = [r.s_per_tile for r in rounds]
    median = statistics.median(seconds)
    outputs = [n for r in rounds for n in r.output_tokens_each]
    row.update(
        rounds=len(rounds), tiles=sum(r.tiles for r in rounds), s_per_tile=round(median, 2),
        s_per_tile_min=min(seconds), s_per_tile_max=max(seconds), s_per_tile_rounds=seconds,
        tiles_per_hour=round(3600 / median, 1) if median else None, answer_tokens=answer_tokens,
        output_tokens_each=outputs, answer_held=bool(outputs) and set(outputs) == {answer_tokens},
        load_average=[list(r.load_average) for r in rounds])
    return row
