"""Headless `Set up TileScribe`: the same Installer the QGIS task runs.

    python -m tilescribe.plugin.bootstrap [--profile DIR] [--python PY] [--gpu|--cpu] [--plan] [--remove]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from . import platforms
from .builds import UnsupportedPlatform
from .commands import SetupError
from .installer import Installer, SetupOptions, prepare, remove_environment
from .spec import PLUGIN_ROOT, SpecError


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m tilescribe.plugin.bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, help="QGIS profile folder (default: the one holding this plugin, "
                        "else QGIS's default profile)")
    parser.add_argument("--python", type=Path, help="Python to build the environment from (default: QGIS's own)")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="want_gpu", action="store_true", default=None, help="GPU builds (CUDA)")
    gpu.add_argument("--cpu", dest="want_gpu", action="store_false", help="CPU builds even with a GPU")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the caption + search check")
    parser.add_argument("--plan", action="store_true", help="print what would be done, change nothing")
    parser.add_argument("--remove", action="store_true", help="delete the environment")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    profile = args.profile or platforms.profile_from_plugin_dir(PLUGIN_ROOT) or platforms.default_profile_dir(
        platform.system(), os.environ, Path.home())
    options = SetupOptions(PLUGIN_ROOT, profile, args.python, args.want_gpu, args.verify)
    try:
        if args.remove:
            remove_environment(options.venv)
            print(f"removed {options.venv}")
            return 0
        prep = prepare(options)
        print(f"environment: {options.venv} ({prep.choice.accelerator}); from {prep.base_python or 'its own Python'}")
        print(prep.summary() or "nothing to do")
        if args.plan:
            return 0
        result = Installer(options, report=lambda pct, msg: print(f"[{pct:5.1f}%] {msg}", file=sys.stderr,
                                                                   flush=True)).run(prep)
    except SetupError as exc:
        print(exc.details(), file=sys.stderr)
        return 1
    except (SpecError, UnsupportedPlatform) as exc:
        print(f"tilescribe setup: {exc}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note)
    print(f"ready: {result.python} (seconds per step: {result.steps}; {result.seconds:.0f} s in all; "
          f"check: {result.check})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
