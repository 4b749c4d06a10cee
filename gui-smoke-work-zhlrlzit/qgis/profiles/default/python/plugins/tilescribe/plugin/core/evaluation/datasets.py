"""Caption datasets for evaluation: line files, JSON image lists and mosaic tile ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CaptionImportError
from .metrics import Query

CAPTION_FILE = "test_caps.txt"
FILENAME_FILE = "test_filename.txt"


@dataclass(frozen=True)
class CaptionItem:
    """One image, or one tile of a mosaic, with its human captions."""

    id: str
    captions: tuple[str, ...]
    image: Path | None = None
    # (x offset, y offset, width, height) in mosaic pixels, for tile ground truth
    pixel_window: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class CaptionDataset:
    """Images (or tiles) with captions; every caption is a query for its own image."""

    name: str
    source: Path
    items: tuple[CaptionItem, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def image_ids(self) -> tuple[str, ...]:
        return tuple(item.id for item in self.items)

    def queries(self) -> tuple[Query, ...]:
        """One query per caption, image by image, so ranks line up across runs."""
        return tuple(
            Query(f"{item.id}#{number}", caption, row)
            for row, item in enumerate(self.items)
            for number, caption in enumerate(item.captions)
        )


def load_dataset(path: str | Path) -> CaptionDataset:
    """Read a caption folder (line format), a test_caps.txt, or a JSON list of images or tiles."""
    path = Path(path)
    if path.is_dir():
        return load_line_dataset(path)
    if path.name == CAPTION_FILE:
        return load_line_dataset(path.parent)
    if not path.exists():
        raise CaptionImportError(
            f"Caption dataset not found: {path}. Give a folder holding {CAPTION_FILE} and "
            f"{FILENAME_FILE}, or a JSON file of images or tiles with captions."
        )
    if path.suffix.lower() == ".json":
        return load_json_dataset(path)
    raise CaptionImportError(
        f"Unknown caption dataset format: {path}. Give a folder holding {CAPTION_FILE} and "
        f"{FILENAME_FILE}, or a .json file."
    )


def load_line_dataset(folder: Path) -> CaptionDataset:
    """Line format: caption n of test_caps.txt belongs to file name n of test_filename.txt."""
    caption_path, name_path = folder / CAPTION_FILE, folder / FILENAME_FILE
    captions, names = _read_lines(caption_path), _read_lines(name_path)
    if len(captions) != len(names):
        raise CaptionImportError(
            f"{caption_path} has {len(captions)} lines but {name_path} has {len(names)}: "
            "the two files must be line-aligned (one file name per caption)."
        )
    grouped: dict[str, list[str]] = {}
    previous = None
    for number, (caption, name) in enumerate(zip(captions, names), start=1):
        # A name seen before but not on the line above means the files are out of step.
        if name in grouped and name != previous:
            raise CaptionImportError(
                f"{name_path} line {number}: {name!r} appeared earlier, not on the line "
                "above; the captions of one image must be on consecutive lines."
            )
        grouped.setdefault(name, []).append(caption)
        previous = name
    items = tuple(CaptionItem(name, tuple(texts)) for name, texts in grouped.items())
    return CaptionDataset(folder.name, folder, items)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CaptionImportError(
            f"Missing {path}: a line-format caption folder needs {CAPTION_FILE} and {FILENAME_FILE}."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptionImportError(f"Cannot read {path} as UTF-8 text: {exc}.") from None
    lines = [line.strip() for line in text.rstrip().splitlines()]
    for number, line in enumerate(lines, start=1):
        if not line:
            raise CaptionImportError(f"{path} line {number} is empty: remove it or fill it in.")
    return lines


def load_json_dataset(path: Path) -> CaptionDataset:
    """A list of images ({"images": [...]} or a bare list) or mosaic tiles ({"tiles": [...]})."""
    data = _read_json(path)
    entries = data.get("tiles", data.get("images")) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise CaptionImportError(
            f"{path} is not a caption dataset: expected a non-empty list of images, "
            'an object with "images": [...], or an object with "tiles": [...], each entry '
            'having "captions": ["...", ...].'
        )
    items = tuple(_json_item(path, number, entry) for number, entry in enumerate(entries))
    seen: set[str] = set()
    for number, item in enumerate(items):
        if item.id in seen:
            raise CaptionImportError(f"{path} entry {number}: id {item.id!r} is used twice.")
        seen.add(item.id)
    return CaptionDataset(path.stem, path, items)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptionImportError(f"Cannot read {path}: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise CaptionImportError(f"{path} is not valid JSON ({exc}).") from None


def _json_item(path: Path, number: int, entry) -> CaptionItem:
    where = f"{path} entry {number}"
    if not isinstance(entry, dict):
        raise CaptionImportError(f"{where} is not an object with \"captions\".")
    captions = entry.get("captions")
    if not isinstance(captions, list) or not captions or not all(
        isinstance(text, str) and text.strip() for text in captions
    ):
        raise CaptionImportError(f"{where}: \"captions\" must be a list of non-empty strings.")
    image = entry.get("image") or entry.get("filename")
    window = _pixel_window(where, entry.get("pixel_window"))
    return CaptionItem(
        id=_item_id(where, entry, image),
        captions=tuple(text.strip() for text in captions),
        image=(path.parent / image) if isinstance(image, str) else None,
        pixel_window=window,
    )


def _item_id(where: str, entry: dict, image) -> str:
    # Tiles are named by grid cell: the same source image may appear in several tiles.
    if "row" in entry and "col" in entry:
        return f"r{entry['row']}c{entry['col']}"
    if entry.get("id") is not None:
        return str(entry["id"])
    if isinstance(image, str) and image:
        return Path(image).name  # matches the file names of the line format
    raise CaptionImportError(f"{where} has neither \"id\", \"image\" nor \"row\"/\"col\".")


def _pixel_window(where: str, window) -> tuple[int, int, int, int] | None:
    if window is None:
        return None
    if not (isinstance(window, list) and len(window) == 4 and all(isinstance(v, int) for v in window)):
        raise CaptionImportError(
            f"{where}: \"pixel_window\" must be four whole numbers [x, y, width, height]."
        )
    return tuple(window)
