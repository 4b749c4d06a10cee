"""Import captions made elsewhere (JSON lines) into an index: the tiles need no model."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..captioning.parse import clean_text
from ..captions import FIELDS, CaptionVariant
from ..embedding import Embedder
from ..errors import CaptionImportError
from ..index.embedder_identity import resolve_embedder
from ..index.opening import AnyStore
from ..raster.tiling import Tile, TileGrid, Window, open_raster, read_info

IMPORT_PROMPT_VERSION = "import"
BATCH_TILES = 64


@dataclass
class ImportReport:
    run_id: int
    imported: int = 0
    already_done: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class CaptionLine:
    line_no: int
    window: Window
    variants: tuple[CaptionVariant, ...]


def parse_line(text: str) -> tuple[Window, tuple[CaptionVariant, ...]]:
    """One JSONL record -> (window, variants); ValueError says what is wrong."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object with 'window' and 'captions'")
    window = record.get("window")
    if not (isinstance(window, list) and len(window) == 4 and all(isinstance(v, int) for v in window)):
        raise ValueError("'window' must be [col_off, row_off, width, height] as whole numbers")
    captions = record.get("captions")
    if not isinstance(captions, list) or not captions:
        raise ValueError("'captions' must be a non-empty list")
    variants = tuple(_variant(item, number) for number, item in enumerate(captions, start=1))
    return Window(*window), variants


def _variant(item, number: int) -> CaptionVariant:
    if isinstance(item, str):
        variant = CaptionVariant.plain(item)
    elif isinstance(item, dict) and any(name in item for name in FIELDS):
        variant = CaptionVariant.from_mapping(item)
    else:
        raise ValueError(f"caption {number} must be a string or an object with {', '.join(FIELDS)}")
    # Cleaned as model answers are: no escape sequence or control character reaches the index (issue 22).
    variant = CaptionVariant(**{name: clean_text(getattr(variant, name)) for name in FIELDS})
    if variant.is_empty():
        raise ValueError(f"caption {number} is empty")
    return variant


def read_caption_lines(path: Path, grid: TileGrid, report: ImportReport) -> list[CaptionLine]:
    """Valid lines of a caption file; bad ones go to report.bad_lines with their line number."""
    lines, seen = [], {}
    try:
        handle = open(path, "rb")  # decoded line by line: one line that is not UTF-8 stops no other
    except OSError as exc:
        raise CaptionImportError(f"Cannot read caption file {path}: {exc.strerror}.") from exc
    with handle:
        for line_no, data in enumerate(handle, start=1):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                report.bad_lines.append((line_no, f"not valid UTF-8 text (byte {exc.start + 1}): save the file "
                                                  "as UTF-8"))
                continue
            if not text.strip():
                continue
            try:
                window, variants = parse_line(text)
                if not grid.contains(window):
                    raise ValueError(
                        f"window {window.as_list()} is not a tile of the {grid.tile_size} px grid "
                        f"(overlap {grid.overlap}) of this {grid.width}x{grid.height} raster"
                    )
                if window in seen:
                    raise ValueError(f"window {window.as_list()} was already given on line {seen[window]}")
            except (ValueError, UnicodeDecodeError) as exc:
                report.bad_lines.append((line_no, str(exc)))
                continue
            seen[window] = line_no
            lines.append(CaptionLine(line_no, window, variants))
    return lines


def infer_tile_size(path: Path) -> int:
    """The tile size a caption file was made with: the size of its first valid window."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for text in handle:
            try:
                window, _ = parse_line(text)
                return max(window.width, window.height)
            except ValueError:
                continue
    raise CaptionImportError(f"Caption file {path} has no valid line: nothing to import.")


def import_captions(store: AnyStore, embedder: Embedder, raster_path: str, captions_path: str, *,
                    tile_size: Optional[int] = None, overlap: int = 0,
                    progress: Optional[Callable[[int, int], None]] = None) -> ImportReport:
    """Import a JSONL caption file for a raster; re-importing the same file adds nothing twice."""
    try:
        return _import(store, embedder, raster_path, Path(captions_path), tile_size, overlap, progress)
    except sqlite3.Error as exc:
        failure = store.write_failure(exc)
        if failure is None:
            raise  # not about the file or the disk: a bug, keep its traceback
        raise failure from exc


def _import(store: AnyStore, embedder: Embedder, raster_path: str, path: Path, tile_size: Optional[int],
            overlap: int, progress) -> ImportReport:
    if not path.is_file():
        raise CaptionImportError(f"Caption file not found: {path}.")
    with open_raster(raster_path) as dataset:
        info = read_info(dataset)
    grid = TileGrid(info.width, info.height, tile_size or infer_tile_size(path), overlap)
    run_id = _import_run(store, embedder, info, grid, path)
    report = ImportReport(run_id=run_id)
    lines = read_caption_lines(path, grid, report)
    if not lines:
        raise CaptionImportError(
            f"No valid line in {path}: " + "; ".join(f"line {n}: {why}" for n, why in report.bad_lines[:3])
        )
    store.add_tiles(run_id, [Tile(line.window, info.bbox(line.window)) for line in lines])
    done = {t.window for t in store.tiles(run_id, "done")}
    todo = [line for line in lines if line.window not in done]
    report.already_done = len(lines) - len(todo)
    for start in range(0, len(todo), BATCH_TILES):
        _import_batch(store, embedder, run_id, todo[start:start + BATCH_TILES])
        report.imported += len(todo[start:start + BATCH_TILES])
        if progress:
            progress(report.imported, len(todo))
    store.finish_run(run_id)
    return report


def _import_run(store: AnyStore, embedder: Embedder, info, grid: TileGrid, path: Path) -> int:
    raster_id = store.upsert_raster(info)
    embedder_id = resolve_embedder(store, embedder)
    captioner = {"backend": "import", "file": path.name}
    args = (raster_id, embedder_id, captioner, IMPORT_PROMPT_VERSION, grid.tile_size, grid.overlap, 0)
    return store.find_run(*args) or store.create_run(*args)


def _import_batch(store: AnyStore, embedder: Embedder, run_id: int, batch: list[CaptionLine]) -> None:
    texts = [v.embedding_text() for line in batch for v in line.variants]
    vectors = embedder.embed(texts)
    offset = 0
    with store.atomic():  # one transaction per batch: all of these tiles, or none
        for line in batch:
            count = len(line.variants)
            tile_id = store.tile_id(run_id, line.window.key)
            store.save_captions(tile_id, line.variants, vectors[offset:offset + count])
            offset += count
