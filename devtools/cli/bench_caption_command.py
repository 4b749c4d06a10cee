"""`tilescribe bench-caption`: the model step at real size, per engine setting, in one run."""

from __future__ import annotations

import json
from pathlib import Path

from ...plugin.core.errors import TileScribeError
from .bench_index_command import DEFAULT_RASTER, SHARED_RASTERS, _generated_raster
from ...plugin.cli.common import positive_int, say

DEFAULT_SETTINGS = ("in-process", "server:1", "server:2", "server:4")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench-caption", help="seconds per tile of captioning with a real-size model, per engine setting",
        description="Writes (once, cached) a random-weight GGUF pair with a real model's shapes and captions "
                    "real tiles with it, rendered and prompted exactly as `index` does, answers held to a "
                    "realistic length. Reports encode/prompt/generation seconds, tokens, cached prompt "
                    "tokens, seconds per tile and tiles per hour for each engine setting, in one run.")
    parser.add_argument("--shape", default="3b", metavar="SHAPE",
                        help="model shapes: 1b/3b (Llama-3.2 + CLIP ViT-L/336), 7b (LLaVA-1.5-7B), tiny (seconds, "
                             "for checking the benchmark itself), or a catalogue model's name (`tilescribe models "
                             "list`) or chat family: that model's own architecture and projector (default 3b)")
    parser.add_argument("--tiny", action="store_true",
                        help="with a catalogue model's name: the same architecture at tiny size (seconds)")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), metavar="SETTING",
                        help="in-process, server:SLOTS, server:SLOTS:image-first (default: "
                             f"{' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--tiles", type=positive_int, default=4, help="tiles per setting (default 4)")
    parser.add_argument("--answer-tokens", type=positive_int, default=800,
                        help="tokens per answer (default 800: 5 realistic variants)")
    parser.add_argument("--variants", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: llama.cpp's)")
    parser.add_argument("--raster", type=Path, default=None,
                        help=f"raster whose tiles are captioned (default: {DEFAULT_RASTER} from ../shared)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..bench.caption_bench import as_dicts, bench_in_process, bench_server, bench_tiles
    from ..bench.shaped_gguf import shape_family, shape_names, shaped_pair

    if args.shape not in shape_names():
        raise TileScribeError(f"Unknown --shape {args.shape!r}: choose one of {', '.join(shape_names())}.")
    settings = [_parse_setting(text) for text in args.settings]
    raster = _raster(args.raster)
    try:
        model, mmproj = shaped_pair(args.shape, log=say, tiny=args.tiny)
    except ValueError as exc:
        raise TileScribeError(str(exc)) from exc
    pngs = bench_tiles(raster, args.tiles)
    say(f"{len(pngs)} tiles of {raster.name}, {args.answer_tokens}-token answers, shape {args.shape}")
    results = []
    shape = f"{args.shape} (tiny)" if args.tiny else args.shape
    common = dict(shape=shape, variants=args.variants, answer_tokens=args.answer_tokens, threads=args.threads,
                  family=shape_family(args.shape))
    for engine, slots, image_first in settings:
        say(f"timing {engine}{f' with {slots} slots' if engine == 'server' else ''} ...")
        if engine == "in-process":
            result = bench_in_process(model, mmproj, pngs, **common)
        else:
            result = bench_server(model, mmproj, pngs, slots=slots, image_first=image_first, **common)
        say(f"  {result.s_per_tile} s per tile, {result.tiles_per_hour} tiles per hour")
        results.append(result)
    rows = as_dicts(results)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        _table(rows)
    return 0


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
    header = ("engine", "slots", "order", "s/tile", "tiles/h", "prompt tok", "cached", "output tok",
              "encode s", "prompt s", "generate s")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (
            r["engine"], r["slots"], r["message_order"], r["s_per_tile"], r["tiles_per_hour"], r["prompt_tokens"],
            r["cached_prompt_tokens"], r["output_tokens"], r["encode_s"], r["prompt_s"], r["generate_s"])))
    if rows:
        print(f"build: {rows[0]['build']}")
