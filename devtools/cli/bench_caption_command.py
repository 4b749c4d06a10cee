"""`tilescribe bench-caption`: the model step at real size, per engine setting, in one run."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from ...plugin.core.errors import TileScribeError
from ..bench import TOKENS_PER_VARIANT
from .bench_index_command import DEFAULT_RASTER, SHARED_RASTERS, _generated_raster
from ...plugin.cli.common import positive_int, say

DEFAULT_SETTINGS = ("in-process", "server:1", "server:2", "server:4")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-caption", help="seconds per tile of captioning with a real-size model, per engine setting",
        description="Writes (once, cached) a random-weight GGUF pair with a real model's shapes and captions "
                    "real tiles with it, rendered and prompted exactly as `index` does, every answer held to "
                    "the same realistic length in every engine. Runs the settings interleaved and repeated "
                    "(A B A B) and reports encode/prompt/generation seconds, tokens, cached prompt tokens, "
                    "seconds per tile (median and min-max over the rounds) and tiles per hour for each "
                    "setting, in one run.")
    parser.add_argument("--shape", nargs="+", default=["3b"], metavar="SHAPE",
                        help="model shapes: 1b/3b (Llama-3.2 + CLIP ViT-L/336), 7b (LLaVA-1.5-7B), tiny (seconds, "
                             "for checking the benchmark itself), or a catalogue model's name (`tilescribe models "
                             "list`) or chat family: that model's own architecture and projector; several names "
                             "time each in the same run (default 3b)")
    parser.add_argument("--tiny", action="store_true",
                        help="with a catalogue model's name: the same architecture at tiny size (seconds)")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), metavar="SETTING",
                        help="in-process, server:SLOTS, server:SLOTS:image-first (default: "
                             f"{' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--tiles", type=positive_int, default=4,
                        help="tiles per setting and round (default 4; at least the most slots asked for)")
    parser.add_argument("--rounds", type=positive_int, default=2,
                        help="times each setting runs, interleaved with the others (A B A B): the report gives "
                             "each setting's median and spread (default 2)")
    parser.add_argument("--answer-tokens", type=positive_int, default=None,
                        help=f"tokens per answer, the same in every engine (default {TOKENS_PER_VARIANT} a variant: "
                             "800 for 5, the length of real answers)")
    parser.add_argument("--variants", type=positive_int, nargs="+", default=[5], metavar="N",
                        help="caption variants asked for per tile; several counts time each in the same run "
                             "(default 5)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--raster", type=Path, default=None,
                        help=f"raster whose tiles are captioned (default: {DEFAULT_RASTER} from ../shared)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args) -> int:
    # As `index` sets it, before llama_cpp (bench_in_process imports it first) loads OpenMP:
    # spinning OpenMP workers made the first real-size runs of this benchmark slower than index.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..bench.caption_bench import bench_in_process, bench_server, bench_tiles, summarize
    from ..bench.shaped_gguf import shape_family, shape_names, shaped_pair

    unknown = [shape for shape in args.shape if shape not in shape_names()]
    if unknown:
        raise TileScribeError(f"Unknown --shape {unknown[0]!r}: choose one of {', '.join(shape_names())}.")
    settings = [_parse_setting(text) for text in args.settings]
    raster = _raster(args.raster)
    pairs = {}
    for shape in dict.fromkeys(args.shape):  # every pair written before anything is timed
        try:
            pairs[shape] = shaped_pair(shape, log=say, tiny=args.tiny)
        except ValueError as exc:
            raise TileScribeError(str(exc)) from exc
    most_slots = max(slots for engine, slots, _ in settings)
    tiles = max(args.tiles, most_slots)
    if tiles > args.tiles:
        say(f"--tiles {args.tiles} is fewer than {most_slots} slots: timing {tiles} tiles, so every slot works")
    pngs = bench_tiles(raster, tiles)
    runs = [(shape, variants, setting) for shape in pairs for variants in dict.fromkeys(args.variants)
            for setting in settings]
    say(f"{len(pngs)} tiles of {raster.name}; {len(runs)} settings x {args.rounds} rounds, interleaved")
    samples: dict = {run: [] for run in runs}
    for round_number in range(1, args.rounds + 1):
        for shape, variants, (engine, slots, image_first) in runs:
            answer = answer_tokens(args, variants)
            model, mmproj = pairs[shape]
            label = f"{shape}{' (tiny)' if args.tiny else ''}"
            say(f"round {round_number}/{args.rounds}: {label}, {variants} variants ({answer} tokens), {engine}"
                f"{f' with {slots} slots' if engine == 'server' else ''} ...")
            common = dict(shape=label, variants=variants, answer_tokens=answer, threads=args.threads,
                          family=shape_family(shape))
            load_before = os.getloadavg()[0]
            if engine == "in-process":
                result = bench_in_process(model, mmproj, pngs, **common)
            else:
                result = bench_server(model, mmproj, pngs, slots=slots, image_first=image_first, **common)
            result = replace(result, load_average=(round(load_before, 2), round(os.getloadavg()[0], 2)))
            say(f"  {result.s_per_tile} s per tile, {result.tiles_per_hour} tiles per hour "
                f"(load average {result.load_average[0]} -> {result.load_average[1]})")
            samples[(shape, variants, (engine, slots, image_first))].append(result)
    rows = [summarize(samples[run], answer_tokens(args, run[1])) for run in runs]
    for row in rows:
        if not row["answer_held"]:
            say(f"warning: {row['shape']} {row['engine']} answers were {sorted(set(row['output_tokens_each']))} "
                f"tokens, not {row['answer_tokens']}: its seconds per tile do not compare with the others")
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _table(rows)
    return 0


def answer_tokens(args, variants: int) -> int:
    """--answer-tokens, else what real answers of that many variants take."""
    return args.answer_tokens or TOKENS_PER_VARIANT * variants


def _parse_setting(text: str) -> tuple[str, int, bool]:
    parts = text.split(":")
    if parts[0] == "in-process" and len(parts) == 1:
        return "in-process", 1, False
    if parts[0] == "server" and len(parts) in (2, 3) and parts[1].isdigit() and int(parts[1]) >= 1 \
            and (len(parts) == 2 or parts[2] == "image-first"):
        return "server", int(parts[1]), len(parts) == 3
    raise TileScribeError(f"Unknown --settings entry {text!r}: use in-process, server:SLOTS or "
                          "server:SLOTS:image-first.")


def _raster(given) -> Path:
    if given is not None:
        if not Path(given).is_file():
            raise TileScribeError(f"Raster not found: {given}.")
        return Path(given)
    if (SHARED_RASTERS / DEFAULT_RASTER).is_file():
        return SHARED_RASTERS / DEFAULT_RASTER
    import tempfile

    say(f"{SHARED_RASTERS} is absent: captioning tiles of a generated raster instead.")
    return _generated_raster(Path(tempfile.mkdtemp(prefix="tilescribe-bench-")) / "generated.tif")


def _table(rows: list[dict]) -> None:
    header = ("shape", "variants", "engine", "slots", "order", "s/tile median", "min-max (rounds)", "tiles/h",
              "prompt tok", "cached", "output tok", "encode s", "prompt s", "generate s")
    print(" | ".join(header))
    for r in rows:
        spread = f"{r['s_per_tile_min']}-{r['s_per_tile_max']} ({r['rounds']})"
        print(" | ".join(str(v) for v in (
            r["shape"], r["variants"], r["engine"], r["slots"], r["message_order"], r["s_per_tile"], spread,
            r["tiles_per_hour"], r["prompt_tokens"], r["cached_prompt_tokens"], r["output_tokens"], r["encode_s"],
            r["prompt_s"], r["generate_s"])))
    for build in dict.fromkeys(r["build"] for r in rows):
        print(f"build: {build}")
