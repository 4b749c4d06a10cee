"""Plugin settings as plain data, stored with QgsSettings under the `tilescribe/` prefix."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsSettings

from ..bootstrap.installer import STAMP

from ..core.captioning.factory import DEFAULT_CAPTIONER
from ..core.indexing.index_settings import IndexSettings

PREFIX = "tilescribe/"
# Not resolved: installed as a symlink, the folder must keep its link name (`tilescribe`).
PLUGIN_DIR = Path(__file__).parents[2]

CAPTIONER_LOCAL = "local"
CAPTIONER_SERVER = "server"
CAPTIONER_TEST = "test"


@dataclass
class PluginSettings:
    """Everything the user sets once; the index dialog starts from these values."""

    worker_python: str = ""        # empty: the environment Set up TileScribe made, else the checkout's .venv
    environment: str = ""          # the venv Set up TileScribe made and checked (remembered)
    captioner: str = CAPTIONER_LOCAL
    model_path: str = ""           # GGUF vision-language model
    mmproj_path: str = ""          # its GGUF vision projector
    engine: str = DEFAULT_CAPTIONER.engine  # or "server": a llama-server TileScribe starts (core ENGINES)
    slots: int = DEFAULT_CAPTIONER.slots    # tiles the llama-server engine decodes together
    models_dir: str = ""           # where downloads go; empty: the default (core.models.folder)
    server_url: str = ""           # OpenAI-compatible endpoint
    server_model: str = ""
    api_key_env: str = ""          # NAME of the environment variable holding the key, never the key
    tile_size: int = IndexSettings.tile_size
    overlap: int = IndexSettings.overlap
    variants: int = IndexSettings.variants
    k: int = 10                    # the dock's Results box: SearchRequest.k (a test keeps them equal; the
                                   # QGIS side may not import the search package, which needs numpy)

    def python(self) -> Path:
        """The Python that runs the worker."""
        if self.worker_python.strip():
            return Path(self.worker_python)
        remembered = venv_python(Path(self.environment)) if self.environment.strip() else None
        return remembered if remembered is not None and remembered.is_file() else default_worker_python()


def venv_python(venv: Path) -> Path:
    return venv / "Scripts" / "python.exe" if sys.platform == "win32" else venv / "bin" / "python"


def managed_environment() -> Path:
    """Where Set up TileScribe puts the environment: the QGIS profile's data folder, which a
    plugin update leaves alone (see plugin/bootstrap/platforms.py)."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "tilescribe" / "venv"


def default_worker_python(plugin_dir: Optional[Path] = None) -> Path:
    """The environment Set up TileScribe made, else the checkout's .venv beside the plugin (what
    `make setup` creates). A made one that never passed its check (a cancelled setup) does not
    replace a working .venv."""
    managed, checkout = managed_environment(), venv_python(Path(plugin_dir or PLUGIN_DIR) / ".venv")
    if venv_python(managed).is_file() and ((managed / STAMP).is_file() or not checkout.is_file()):
        return venv_python(managed)
    return checkout


def read_settings(store: Optional[QgsSettings] = None) -> PluginSettings:
    """Typed values: each field's default gives the type QgsSettings converts to."""
    store = store or QgsSettings()
    defaults = PluginSettings()
    values = {}
    for field in fields(PluginSettings):
        default = getattr(defaults, field.name)
        values[field.name] = store.value(PREFIX + field.name, default, type=type(default))
    return PluginSettings(**values)


def write_settings(settings: PluginSettings, store: Optional[QgsSettings] = None) -> None:
    store = store or QgsSettings()
    for name, value in asdict(settings).items():
        store.setValue(PREFIX + name, value)
