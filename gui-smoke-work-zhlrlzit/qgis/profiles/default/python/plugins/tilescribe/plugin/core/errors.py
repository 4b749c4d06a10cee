"""Errors a user can act on: each message names the file or setting and what to do."""

from __future__ import annotations


class TileScribeError(Exception):
    """Base of every error shown to the user; str(err) is the whole message."""


class RasterError(TileScribeError):
    """A raster cannot be read or tiled."""


class IndexFileError(TileScribeError):
    """An index file cannot be opened, is not an index, or is of another version."""


class ModelError(TileScribeError):
    """A model file, folder or server cannot be used."""


class CaptionError(TileScribeError):
    """This one tile could not be captioned (bad answer, refused image, overflow, timeout).

    It belongs to the tile: the indexer records it on the tile and the run goes on.
    """


class EngineError(ModelError):
    """The captioning engine itself is gone (server down for good, worker process dead).

    Ends a run early with this message; every tile captioned before is kept.
    """


class CaptionImportError(TileScribeError):
    """A caption file cannot be imported."""


class QueryError(TileScribeError):
    """A search query or its options are not valid."""


class IndexingError(TileScribeError):
    """Indexing stopped; what was committed before stays in the index."""


class Cancelled(TileScribeError):
    """The user cancelled; work committed so far is kept."""


class ProtocolError(TileScribeError):
    """A request line that is not a valid request: not JSON, unknown command or field, a bad field."""


def error_class(name: str) -> type[TileScribeError] | None:
    """The TileScribeError subclass of this name (how an error's type crosses the worker pipe)."""
    pending = [TileScribeError]
    while pending:  # breadth first: the class itself before subclasses that share its name
        cls = pending.pop(0)
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return None


# What a native crash means and what to do, said the same way by the worker client (QGIS),
# the managed llama-server and the CLI: one owner for the advice.
_SIGNAL_MEANING = {
    "SIGILL": "an instruction this CPU does not have: a llama.cpp build made for another CPU",
    "SIGSEGV": "a memory fault in native code (llama.cpp, a model file it could not read)",
    "SIGBUS": "a memory fault in native code (often a model file changed or truncated while in use)",
    "SIGABRT": "native code stopped itself (a failed check in llama.cpp, often out of memory)",
    "SIGKILL": "killed from outside (often the system's out-of-memory killer)",
}
REBUILD_ADVICE = ("Rebuild the model runtime for this CPU: in QGIS, Set up TileScribe > Repair (the TileScribe "
                  "dock, or Raster > TileScribe > Settings); from a checkout, make setup. Indexed tiles are kept: "
                  "indexing again resumes where it stopped.")


def describe_exit(returncode: int | None) -> str:
    """'killed by SIGILL (an instruction this CPU does not have: ...)' or 'exit code 3'."""
    if returncode is None or returncode >= 0:
        return f"exit code {returncode}"
    import signal

    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"killed by signal {-returncode}"
    meaning = _SIGNAL_MEANING.get(name)
    return f"killed by {name}" + (f" ({meaning})" if meaning else "")


def is_native_crash(returncode: int | None) -> bool:
    return returncode is not None and returncode < 0 and -returncode != 15  # SIGTERM: we stopped it
