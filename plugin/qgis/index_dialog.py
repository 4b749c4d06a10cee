"""The Index layer dialog: which raster, which captioning model, tiles, and where the index goes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsMapLayerProxyModel
from qgis.gui import QgsFileWidget
from qgis.PyQt import uic
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox

from ..core.errors import TileScribeError
from ..core.indexing.index_settings import INDEX_SUFFIX
from .indexing import IndexRequest, captioner_settings, default_index_path, raster_file
from .messages import push_wrapped
from .model_fields import enable_slots, fill_engine_choices, model_field_values, show_model_fields
from .model_picker import add_model_picker_button
from .postgres_connections import add_index_target
from .settings import CAPTIONER_LOCAL, CAPTIONER_SERVER, CAPTIONER_TEST, PluginSettings

UI_FILE = Path(__file__).resolve().parents[2] / "ui" / "index_dialog.ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_FILE))
GGUF_FILTER = "GGUF model (*.gguf);;All files (*)"


class IndexDialog(QDialog, FORM_CLASS):
    """Accepts only a complete request: problems show in the dialog's own message bar."""

    def __init__(self, settings: PluginSettings, layer=None, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.settings = settings
        self.index_request: Optional[IndexRequest] = None
        self.layerCombo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layerCombo.setAllowEmptyLayer(True)  # so "nothing selected" is a state we can explain
        for widget in (self.modelFile, self.mmprojFile):
            widget.setFilter(GGUF_FILTER)
        self.indexFile.setStorageMode(QgsFileWidget.SaveFile)
        self.indexFile.setFilter(f"TileScribe index (*{INDEX_SUFFIX})")
        self.buttonBox.button(QDialogButtonBox.Ok).setText("Index")
        self.buttonBox.accepted.connect(self.accept)
        self.buttonBox.rejected.connect(self.reject)
        self.layerCombo.layerChanged.connect(self._layer_changed)
        for radio in (self.localRadio, self.serverRadio, self.testRadio):
            radio.toggled.connect(self._enable_model_fields)
        self.pickerButton = add_model_picker_button(self, lambda: self.settings, self._store_models_dir)
        fill_engine_choices(self, settings)
        self.postgresTarget = add_index_target(self)  # "Index into": the file, or a saved PostgreSQL connection
        self._clear_problem_on_change()
        self._load(settings)
        self.layerCombo.setLayer(layer)
        self._layer_changed(layer)

    def _load(self, settings: PluginSettings) -> None:
        {CAPTIONER_LOCAL: self.localRadio, CAPTIONER_SERVER: self.serverRadio,
         CAPTIONER_TEST: self.testRadio}.get(settings.captioner, self.localRadio).setChecked(True)
        show_model_fields(self, settings)
        self._enable_model_fields()

    def _captioner_choice(self) -> str:
        if self.serverRadio.isChecked():
            return CAPTIONER_SERVER
        return CAPTIONER_TEST if self.testRadio.isChecked() else CAPTIONER_LOCAL

    def chosen_settings(self) -> PluginSettings:
        """The settings as the widgets show them (remembered for the next time)."""
        return replace(self.settings, captioner=self._captioner_choice(), **model_field_values(self))

    def build_request(self) -> IndexRequest:
        """The request the widgets describe, or a TileScribeError naming what to fix."""
        layer = self.layerCombo.currentLayer()
        raster = raster_file(layer)
        settings = self.chosen_settings()
        if settings.overlap >= settings.tile_size:
            raise TileScribeError(f"Overlap ({settings.overlap} px) must be smaller than the tile size "
                                  f"({settings.tile_size} px).")
        postgres = self.postgresTarget.chosen_db()  # None: the file below
        db = postgres or self.indexFile.filePath().strip() or default_index_path(raster)
        if not postgres and not db.endswith(INDEX_SUFFIX):
            db += INDEX_SUFFIX
        return IndexRequest(layer.name(), raster, db, captioner_settings(settings),
                            settings.tile_size, settings.overlap, settings.variants)

    def accept(self) -> None:
        try:
            self.index_request = self.build_request()
        except TileScribeError as exc:
            self.show_problem(f"Cannot index yet: {exc}")
            return
        self.settings = self.chosen_settings()
        super().accept()

    def show_problem(self, text: str) -> None:
        """One wrapped message (the bar's own text view clipped long ones); it goes at the next change."""
        self.messageBar.clearWidgets()
        push_wrapped(self.messageBar, text, Qgis.Warning)

    def _clear_problem_on_change(self) -> None:
        """Any edit may fix what the message names: an outdated message misleads, so it goes."""
        clear = lambda *_args: self.messageBar.clearWidgets()  # noqa: E731
        for radio in (self.localRadio, self.serverRadio, self.testRadio):
            radio.toggled.connect(clear)
        for widget in (self.modelFile, self.mmprojFile, self.indexFile):
            widget.fileChanged.connect(clear)
        for edit in (self.serverUrlEdit, self.serverModelEdit, self.apiKeyEnvEdit):
            edit.textChanged.connect(clear)
        for spin in (self.tileSizeSpin, self.overlapSpin):
            spin.valueChanged.connect(clear)

    def _layer_changed(self, layer) -> None:
        self.messageBar.clearWidgets()
        try:
            self.indexFile.setFilePath(default_index_path(raster_file(layer)))
        except TileScribeError as exc:
            self.indexFile.setFilePath("")
            if layer is not None:  # an empty choice is explained when the user presses Index
                self.show_problem(str(exc))

    def _store_models_dir(self, settings: PluginSettings) -> None:
        self.settings = replace(self.settings, models_dir=settings.models_dir)

    def _enable_model_fields(self, *_args) -> None:
        local, server = self.localRadio.isChecked(), self.serverRadio.isChecked()
        for widget in (self.modelFile, self.mmprojFile, self.modelLabel, self.mmprojLabel, self.pickerButton,
                       self.engineLabel, self.engineCombo):
            widget.setEnabled(local)
        enable_slots(self)
        for widget in (self.serverUrlEdit, self.serverModelEdit, self.apiKeyEnvEdit, self.serverUrlLabel,
                       self.serverModelLabel, self.apiKeyEnvLabel):
            widget.setEnabled(server)
