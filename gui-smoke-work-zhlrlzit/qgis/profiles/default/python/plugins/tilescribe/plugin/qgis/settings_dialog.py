"""The settings dialog: edits a PluginSettings; the caller stores it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qgis.PyQt import uic
from qgis.PyQt.QtWidgets import QDialog

from .model_fields import fill_engine_choices, model_field_values, show_model_fields
from .model_picker import add_model_picker_button
from .settings import PluginSettings, default_worker_python

UI_FILE = Path(__file__).resolve().parents[2] / "ui" / "settings_dialog.ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_FILE))


class SettingsDialog(QDialog, FORM_CLASS):
    def __init__(self, settings: PluginSettings, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.original = settings
        self.pythonHint.setText(f"Empty: TileScribe's own environment ({default_worker_python()}).")
        for widget in (self.modelFile, self.mmprojFile):
            widget.setFilter("GGUF model (*.gguf);;All files (*)")
        self.buttonBox.accepted.connect(self.accept)
        self.buttonBox.rejected.connect(self.reject)
        self.pythonFile.setFilePath(settings.worker_python)
        fill_engine_choices(self, settings)
        show_model_fields(self, settings)
        self.kSpin.setValue(settings.k)
        self.pickerButton = add_model_picker_button(self, lambda: self.original, self._store_models_dir)

    def _store_models_dir(self, settings: PluginSettings) -> None:
        self.original = replace(self.original, models_dir=settings.models_dir)

    def chosen_settings(self) -> PluginSettings:
        return replace(self.original, worker_python=self.pythonFile.filePath().strip(),
                       k=self.kSpin.value(), **model_field_values(self))
