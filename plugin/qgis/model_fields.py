"""The model and tile fields that the index and settings dialogs share: filled and read in one place."""

from __future__ import annotations

from .settings import PluginSettings


def show_model_fields(form, settings: PluginSettings) -> None:
    """Put the settings into a form's model, server and tile widgets (same names in both .ui files)."""
    form.modelFile.setFilePath(settings.model_path)
    form.mmprojFile.setFilePath(settings.mmproj_path)
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
        server_url=form.serverUrlEdit.text().strip(), server_model=form.serverModelEdit.text().strip(),
        api_key_env=form.apiKeyEnvEdit.text().strip(), tile_size=form.tileSizeSpin.value(),
        overlap=form.overlapSpin.value(), variants=form.variantsSpin.value(),
    )
