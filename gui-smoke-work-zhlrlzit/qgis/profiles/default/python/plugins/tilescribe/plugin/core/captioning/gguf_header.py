"""A fast reader of GGUF headers (metadata, tensor shapes) to check model files before loading."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import ModelError

GGUF_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# GGUF value type -> struct format of a scalar; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 1 << 31  # more keys, tensors or dimensions than this: a corrupt header


@dataclass
class GgufInfo:
    """What TileScribe needs from a GGUF header: metadata scalars and tensor shapes."""

    path: Path
    arch: str
    name: str
    fields: dict  # scalar and string metadata; arrays are skipped
    tensors: dict = field(default_factory=dict)  # name -> ggml shape (ne order)


def read_gguf_info(path: str | os.PathLike, role: str) -> GgufInfo:
    """The header of a GGUF file, or ModelError naming `role` and the file and what to do.

    gguf.GGUFReader parses whole vocabularies into Python objects (seconds for a
    150k-token model); this reads only what the checks need.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"The {role} file does not exist: {path}. Check the path in the model settings."
        )
    with path.open("rb") as handle:
        magic = handle.read(4)
        if magic != GGUF_MAGIC:
            raise ModelError(
                f"The {role} file {path} is not a GGUF file (it starts with {magic!r}, not "
                "b'GGUF'). Give a .gguf file converted for llama.cpp."
            )
        try:
            fields, tensors, data_end = _read_header(handle)
        except (struct.error, EOFError, ValueError, UnicodeDecodeError) as exc:
            raise ModelError(
                f"The {role} file {path} is truncated or corrupt ({exc}). Download it again."
            ) from exc
    if data_end > path.stat().st_size:
        raise ModelError(f"The {role} file {path} is truncated. Download it again.")
    arch = str(fields.get("general.architecture") or "")
    return GgufInfo(path, arch, str(fields.get("general.name") or ""), fields, tensors)


def _read_header(handle: BinaryIO) -> tuple[dict, dict, int]:
    """(metadata, tensor shapes, where the tensor data ends) after the magic bytes."""
    version, n_tensors, n_kv = struct.unpack("<IQQ", _read(handle, 20))
    if version < 2 or n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise ValueError(f"unsupported GGUF version {version} or impossible counts")
    fields = {}
    for _ in range(n_kv):
        key = _read_string(handle)
        fields[key] = _read_value(handle, _read_u32(handle))
    infos = [_read_tensor_info(handle) for _ in range(n_tensors)]
    alignment = int(fields.get("general.alignment") or _DEFAULT_ALIGNMENT)
    data_start = -(-handle.tell() // alignment) * alignment
    data_end = max((data_start + offset + size for _, _, offset, size in infos), default=data_start)
    return fields, {name: shape for name, shape, _, _ in infos}, data_end


# GGUF metadata nests arrays of arrays at most a level or two deep; a file nesting them
# thousands deep ended the reader in a RecursionError (issue 22: exit 70).
_MAX_NESTING = 16


def _read_value(handle: BinaryIO, kind: int, depth: int = 0):
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _read(handle, struct.calcsize(fmt)))[0]
    if kind == _STRING:
        return _read_string(handle)
    if kind == _ARRAY:
        if depth >= _MAX_NESTING:
            raise ValueError(f"metadata arrays nested more than {_MAX_NESTING} deep")
        _skip_array(handle, _read_u32(handle), _read_u64(handle), depth + 1)
        return None
    raise ValueError(f"unknown metadata value type {kind}")


def _skip_array(handle: BinaryIO, kind: int, count: int, depth: int = 1) -> None:
    if count > _MAX_COUNT:
        raise ValueError("impossible array length")
    if kind in _SCALARS:
        handle.seek(count * struct.calcsize(_SCALARS[kind]), os.SEEK_CUR)
    elif kind == _STRING:
        for _ in range(count):  # vocabularies: only the lengths are read
            handle.seek(_read_u64(handle), os.SEEK_CUR)
    else:
        for _ in range(count):
            _read_value(handle, kind, depth)


def _read_tensor_info(handle: BinaryIO) -> tuple[str, tuple, int, int]:
    """(name, ggml shape, data offset, size in bytes or 0 for an unknown type)."""
    name = _read_string(handle)
    n_dims = _read_u32(handle)
    if n_dims > 8:
        raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
    shape = struct.unpack(f"<{n_dims}Q", _read(handle, 8 * n_dims))
    kind, offset = _read_u32(handle), _read_u64(handle)
    return name, shape, offset, _tensor_bytes(shape, kind)


def _tensor_bytes(shape: tuple, kind: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):  # a type newer than the gguf package: no size check
        return 0
    count = 1
    for dim in shape:
        count *= dim
    return count // block * type_size


def _read_string(handle: BinaryIO) -> str:
    return _read(handle, _read_u64(handle)).decode("utf-8")


def _read_u32(handle: BinaryIO) -> int:
    return struct.unpack("<I", _read(handle, 4))[0]


def _read_u64(handle: BinaryIO) -> int:
    return struct.unpack("<Q", _read(handle, 8))[0]


def _read(handle: BinaryIO, size: int) -> bytes:
    if size > _MAX_COUNT:
        raise ValueError("impossible length in header")
    data = handle.read(size)
    if len(data) != size:
        raise EOFError("the file ends inside its header")
    return data
