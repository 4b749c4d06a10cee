"""Plugin settings as plain data, stored with QgsSettings under the `tilescribe/` prefix."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from qgis.core import QgsSettings

from ..core.index_settings import IndexSettings

PREFIX = "tilescribe/"
# Not resolved: installed as a symlink, the folder must keep its link name (`tilescribe`).
PLUGIN_DIR = Path(__file__).parents[2]

CAPTIONER_LOCAL = "local"
CAPTIONER_SERVER = "server"
CAPTIONER_TEST = "test"


@dataclass
class PluginSettings:
    """Everything the user sets once; the index dialog starts from these values."""

    worker_python: str = ""        # empty: the plugin checkout's own .venv
    captioner: str = CAPTIONER_LOCAL
    model_path: str = ""           # GGUF vision-language model
    mmproj_path: str = ""          # its GGUF vision projector
    models_dir: str = ""           # where downloads go; empty: the default (core.models.folder)
    server_url: str = ""           # OpenAI-compatible endpoint
    server_model: str = ""
    api_key_env: str = ""          # NAME of the environment variable holding the key, never the key
    tile_size: int = IndexSettings.tile_size
    overlap: int = IndexSettings.overlap
    variants: int = IndexSettings.variants
    k: int = 10

    def python(self) -> Path:
        """The Python that runs the worker."""
        return Path(self.worker_python) if self.worker_python.strip() else default_worker_python()


def default_worker_python(plugin_dir: Optional[Path] = None) -> Path:
    """The checkout's .venv beside the plugin (what `make setup` creates)."""
    venv = Path(plugin_dir or PLUGIN_DIR) / ".venv"
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


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
