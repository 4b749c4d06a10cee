"""`tilescribe models list | download | verify`: the catalogue, downloads into the models folder, checks."""

from __future__ import annotations

import json
import sys

from ..core.errors import ModelError
from ..core.models.catalogue import format_size, load_catalogue, resolve_spec
from ..core.models.folder import MODELS_DIR_ENV, installed_models, models_dir
from .common import say
from .progress import format_duration


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list, download and check vision-language models")
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION")
    commands.required = True
    listing = commands.add_parser("list", help="the recommended models and which are downloaded")
    listing.add_argument("--format", choices=("text", "json"), default="text")
    _add_dir(listing)
    listing.set_defaults(func=run_list)
    download = commands.add_parser(
        "download", help="download a model of the catalogue, or any hub repository's files",
        description="Resumes an interrupted download; checks free space first and each file's hash "
                    "against the hub's. Honours HF_ENDPOINT, HF_HOME, HF_TOKEN and proxy variables.")
    download.add_argument("name", metavar="NAME_OR_REPO", help="a catalogue name (see `models list`) or owner/repo")
    download.add_argument("--files", nargs="+", metavar="F", default=(),
                          help="the GGUF text model and its mmproj in the repository (needed for a repository)")
    download.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    download.add_argument("--progress", choices=("text", "json"), default="text",
                          help="json: one event object a line on stdout (for programs)")
    _add_dir(download)
    download.set_defaults(func=run_download)
    verify = commands.add_parser("verify", help="check model files (hashes, headers, pair) and the device")
    verify.add_argument("path", nargs="?", default=None,
                        help="a GGUF file, a model folder, or a models folder (default: the models folder)")
    verify.add_argument("--format", choices=("text", "json"), default="text")
    _add_dir(verify)
    verify.set_defaults(func=run_verify)


def _add_dir(parser) -> None:
    parser.add_argument("--dir", default=None, metavar="DIR",
                        help=f"models folder (default: ${MODELS_DIR_ENV}, else {models_dir()})")


def run_list(args) -> int:
    root = models_dir(args.dir)
    def damaged(folder, exc):  # was skipped without a word (issue 22)
        say(f"note: {folder} skipped: {exc} (`tilescribe models verify --dir {root}` checks every folder)")

    installed = {m.repo.lower(): m for m in installed_models(root, on_damaged=damaged)}
    rows = []
    for entry in load_catalogue():
        model = installed.get(entry.repo.lower())
        rows.append(dict(entry.to_json(), installed=model is not None,
                         paths=model.to_json() if model else None))
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        about = "~" if row["size_approximate"] else ""
        state = f"downloaded in {row['paths']['folder']}" if row["installed"] else "not downloaded"
        print(f"{row['name']:<16} {about}{format_size(row['size_bytes']):>8}  {row['family']:<14} {row['title']}")
        print(f"{'':<16} {row['repo']}: {', '.join(row['files'])}")
        print(f"{'':<16} {row['licence']}. {row['note']} ({state})")
    others = [m for repo, m in installed.items() if repo not in {e.repo.lower() for e in load_catalogue()}]
    for model in others:
        print(f"{model.name:<16} downloaded in {model.folder} (family {model.family})")
    say(f"models folder: {root}")
    return 0


def run_download(args) -> int:
    try:
        from ..core.models.download import download_model  # imports huggingface_hub: only here
    except ImportError as exc:
        raise ModelError(f"Downloading needs huggingface_hub, which this Python lacks ({exc}). "
                         "Run `make setup` in the plugin folder.") from exc

    spec = resolve_spec(args.name, args.files, args.revision)
    root = models_dir(args.dir)
    show = _JsonEvents() if args.progress == "json" else _TextEvents()
    model = download_model(spec, root, progress=show)
    if args.progress == "text":
        print(f"--model {model.model} --mmproj {model.mmproj} --family {model.family}")
    return 0


def run_verify(args) -> int:
    from ..core.captioning.device import device_report
    from ..core.models.verify import verify_path

    path = args.path or models_dir(args.dir)
    device = device_report()
    on_file = None if args.format == "json" else lambda p: say(f"checking {p} ...")
    checks = verify_path(path, on_file) if args.path or path.is_dir() else []  # no downloads yet: fine
    if args.format == "json":
        print(json.dumps({"device": device.to_json(), "checks": [c.to_json() for c in checks]}, indent=2))
    else:
        print(device.line())
        if device.hint:
            print(f"hint: {device.hint}")
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.subject}: {check.message}")
        if not checks:
            print(f"no model files in {path}: `tilescribe models download NAME` puts them there")
    return 0 if all(c.ok for c in checks) else 1


class _JsonEvents:
    """One JSON object a line on stdout: what the QGIS download task reads."""

    def __call__(self, event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


class _TextEvents:
    """One line per file, and a progress line at most every few seconds (every event on a terminal)."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, event: dict) -> None:
        import time

        kind = event["event"]
        if kind == "file":
            resumed = f", resuming at {format_size(event['resume_from'])}" if event["resume_from"] else ""
            say(f"downloading {event['file']} ({format_size(event['size'])}{resumed})")
        elif kind == "present":
            by = event.get("by", "sha256")
            say(f"{event['file']}: already downloaded, "
                + (f"{by} checked" if by != "size" else "size checked only (the hub gave no content hash)"))
        elif kind == "checked":
            if event["by"] == "size":
                say(f"{event['file']}: size checked only: the hub at {event['endpoint']} gave no content hash "
                    f"(ETag {event['etag']}), so its content could not be verified. Download from the Hugging "
                    "Face hub itself (unset HF_ENDPOINT) to have it checked.")
            else:
                say(f"{event['file']}: {event['by']} checked against the hub's")
        elif kind == "cached":
            say(f"{event['file']}: taken from the Hugging Face cache {event['from']}")
        elif kind == "verify":
            say(f"{event['file']}: checking its hash")
        elif kind == "progress" and (self.tty or time.monotonic() - self._last >= 5):
            self._last = time.monotonic()
            left = (event["size"] - event["done"]) / event["bytes_per_s"] if event["bytes_per_s"] else None
            say(f"  {format_size(event['done'])} of {format_size(event['size'])}, "
                f"{format_size(event['bytes_per_s'])}/s, {format_duration(left)} left")
        elif kind == "done":
            say(f"done: {event['name']} in {event['folder']} (chat family {event['family']})")
