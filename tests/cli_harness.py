"""The real `tilescribe` command for subprocess tests, with the fast hashing embedder.

    python tests/cli_harness.py index RASTER --db DB --test-model ...

Everything is the installed CLI except the embedder (all-MiniLM-L6-v2 takes seconds to
load: too slow to start twenty times in a kill test). With TILESCRIBE_TEST_CAPTION_LOG
set to a file, every tile handed to the captioner is appended to it as "<pid> <tile key>"
before the model sees it, so a test can tell which tiles each process captioned.
"""

from __future__ import annotations

import os
import sys


def _log_caption_calls(log_path: str) -> None:
    from tilescribe.plugin.core.indexing import indexer

    stream = indexer._caption_stream

    def logged(captioner, jobs, n_variants, parallel):
        def tap():
            for tile, png in jobs:
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(f"{os.getpid()} {tile.window.key}\n")
                yield tile, png
        return stream(captioner, tap(), n_variants, parallel)

    indexer._caption_stream = logged


def main() -> int:
    from tilescribe.plugin.cli import import_captions, index_command, search_command
    from fakes import HashingEmbedder

    for module in (import_captions, index_command, search_command):
        module.load_embedder = lambda folder: HashingEmbedder()
    if os.environ.get("TILESCRIBE_TEST_CAPTION_LOG"):
        _log_caption_calls(os.environ["TILESCRIBE_TEST_CAPTION_LOG"])
    from tilescribe.plugin.cli.main import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
