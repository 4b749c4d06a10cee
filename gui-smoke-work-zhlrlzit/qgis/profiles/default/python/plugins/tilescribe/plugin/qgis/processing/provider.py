"""The "TileScribe" Processing provider; its algorithms reach the models through the worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ImportCaptionsAlgorithm, IndexLayerAlgorithm, SearchAlgorithm

ICON = str(Path(__file__).resolve().parents[3] / "resources" / "icon.svg")


class TileScribeProvider(QgsProcessingProvider):
    """`client()` gives the plugin's WorkerClient (one worker for the dock and the algorithms)."""

    def __init__(self, client: Callable):
        super().__init__()
        self._client = client

    def id(self) -> str:
        return "tilescribe"

    def name(self) -> str:
        return "TileScribe"

    def longName(self) -> str:
        return "TileScribe: find places in rasters by describing them"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def loadAlgorithms(self) -> None:
        for algorithm in (IndexLayerAlgorithm, SearchAlgorithm, ImportCaptionsAlgorithm):
            self.addAlgorithm(algorithm(self._client))
