"""The model and tile fields that the index and settings dialogs share: filled and read in one place."""

from __future__ import annotations

from pathlib import Path

from .settings import PluginSettings

# core.captioning.factory.ENGINES, in words a user reads (the QGIS side stays free of the core's imports).
ENGINE_CHOICES = (("llama-cpp-python", "In the worker, one tile at a time"),
                  ("server", "llama-server, several tiles at once (faster)"))


SERVER_MISSING = ("Not available: TileScribe's environment has no llama-server built for this computer. "
                  "Captioning runs in the worker, one tile at a time. Set up TileScribe… > Repair builds "
                  "llama-server where a C++ compiler is installed (about 10 minutes on 2 cores).")


def llama_server_installed(settings: PluginSettings) -> bool:
    """The llama-server setup linked beside the worker's Python (where the worker looks first)."""
    folder = Path(settings.python()).parent
    return any((folder / name).is_file() for name in ("llama-server", "llama-server.exe"))


def fill_engine_choices(form, settings: PluginSettings) -> None:
    """The engine combo's entries (llama-server only when the environment has one: never offer
    what would fail), and the slots box enabled only for llama-server."""
    server = llama_server_installed(settings)
    for value, label in ENGINE_CHOICES:
        form.engineCombo.addItem(label, value)
        if value == "server" and not server:
            index = form.engineCombo.count() - 1
            form.engineCombo.model().item(index).setEnabled(False)
            form.engineCombo.setItemData(index, SERVER_MISSING, 3)  # Qt.ToolTipRole
    form.engineCombo.currentIndexChanged.connect(lambda *_: enable_slots(form))


def show_model_fields(form, settings: PluginSettings) -> None:
    """Put the settings into a form's model, server and tile widgets (same names in both .ui files)."""
    form.modelFile.setFilePath(settings.model_path)
    form.mmprojFile.setFilePath(settings.mmproj_path)
    index = form.engineCombo.findData(settings.engine)
    enabled = index >= 0 and form.engineCombo.model().item(index).isEnabled()
    form.engineCombo.setCurrentIndex(index if enabled else 0)
    form.slotsSpin.setValue(settings.slots)
    enable_slots(form)
    form.serverUrlEdit.setText(settings.server_url)
    form.serverModelEdit.setText(settings.server_model)
    form.apiKeyEnvEdit.setText(settings.api_key_env)
    form.tileSizeSpin.setValue(settings.tile_size)
    form.overlapSpin.setValue(settings.overlap)
    form.variantsSpin.setValue(settings.variants)


def model_field_values(form) -> dict:
    """The PluginSettings fields as a form's widgets show them."""
    return dict(
        model_path=form.modelFile.filePath().strip(), mmproj_path=form.mmprojFile.filePath().strip(),
        engine=form.engineCombo.currentData() or "llama-cpp-python", slots=form.slotsSpin.value(),
        server_url=form.serverUrlEdit.text().strip(), server_model=form.serverModelEdit.text().strip(),
        api_key_env=form.apiKeyEnvEdit.text().strip(), tile_size=form.tileSizeSpin.value(),
        overlap=form.overlapSpin.value(), variants=form.variantsSpin.value(),
    )


def enable_slots(form) -> None:
    """The slots box matters only for llama-server."""
    enabled = form.engineCombo.isEnabled() and form.engineCombo.currentData() == "server"
    form.slotsSpin.setEnabled(enabled)
    form.slotsLabel.setEnabled(enabled)
