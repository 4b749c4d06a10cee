"""Bad input in the UI: each case tells the user what happened and what to do; QGIS keeps running."""

from __future__ import annotations

import pytest
from gui_events import bar_texts, newest_task

pytestmark = pytest.mark.qgis


def _dialog_messages(dialog) -> str:
    return " | ".join(bar_texts(dialog.messageBar))


def test_no_raster_in_the_project(plugin, fake_iface):
    from qgis.core import Qgis

    assert plugin.index_layer() is None
    [(level, text)] = fake_iface.messages()
    assert level == Qgis.Warning
    assert "No raster layer to index" in text and "add a raster" in text


def test_no_raster_selected_in_the_dialog(plugin, rgb_raster, add_raster):
    add_raster(rgb_raster)
    dialog = plugin.index_layer()
    dialog.set_checked_layers([])
    dialog.testRadio.setChecked(True)
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    assert dialog.isVisible() and dialog.index_request is None
    assert "No raster layer selected" in _dialog_messages(dialog)


def test_a_web_layer_needs_a_folder_when_the_project_is_not_saved(plugin, rgb_raster, add_raster):
    """Web layers are rendered to a GeoTIFF first (tests/qgis/test_qgis_web_layer.py): beside the project,
    and an unsaved project has no folder yet: the dialog says to choose one instead of guessing."""
    from qgis.core import QgsProject, QgsRasterLayer

    add_raster(rgb_raster)
    xyz = QgsRasterLayer("type=xyz&url=https://tile.example.invalid/{z}/{x}/{y}.png&zmax=19&zmin=0", "tiles", "wms")
    QgsProject.instance().addMapLayer(xyz)
    dialog = plugin.index_layer()
    dialog.set_checked_layers([xyz])
    assert dialog.renderFields.isVisibleTo(dialog) and dialog.renderFields.folder() == ""
    dialog.testRadio.setChecked(True)
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    assert dialog.isVisible() and dialog.index_request is None
    text = _dialog_messages(dialog)
    assert "Choose a folder for the rendered GeoTIFF" in text and "not saved yet" in text


def test_missing_model_files(plugin, rgb_raster, add_raster, tmp_path):
    add_raster(rgb_raster)
    dialog = plugin.index_layer()
    dialog.localRadio.setChecked(True)
    dialog.modelFile.setFilePath(str(tmp_path / "gone.gguf"))
    dialog.mmprojFile.setFilePath(str(tmp_path / "gone-mmproj.gguf"))
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    assert dialog.isVisible() and dialog.index_request is None
    text = _dialog_messages(dialog)
    assert "model file was not found" in text and "gone.gguf" in text and "Pick an existing GGUF" in text


def test_valid_dialog_remembers_its_choices(plugin, rgb_raster, add_raster):
    from tilescribe.plugin.qgis.settings import read_settings

    add_raster(rgb_raster)
    dialog = plugin.index_layer()
    assert dialog.indexFile.filePath() == str(rgb_raster.with_name("rgb.tilescribe.sqlite"))
    dialog.testRadio.setChecked(True)
    dialog.tileSizeSpin.setValue(200)
    request = dialog.build_request()
    assert request.raster == str(rgb_raster) and request.captioner.test_model and request.tile_size == 200
    started = []
    plugin.start_index = started.append  # the dialog's answer, without starting a worker here
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    assert not dialog.isVisible() and started == [request]
    # The Test model is a one-off: the next dialog starts from the saved captioner (issue 20 item 6).
    assert read_settings().captioner == "local" and read_settings().tile_size == 200


def test_worker_python_missing(plugin, rgb_raster, add_raster, wait_task, tmp_path):
    from tilescribe.plugin.qgis.settings import PluginSettings, write_settings

    missing = tmp_path / "no-env" / "bin" / "python"
    write_settings(PluginSettings(worker_python=str(missing)))
    add_raster(rgb_raster)
    dialog = plugin.index_layer()
    dialog.testRadio.setChecked(True)
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    task = newest_task(plugin)
    result = wait_task(task, 30)
    assert result.error is not None
    box = plugin.messages.environment_dialog
    assert box is not None and box.isVisible()
    assert str(missing) in box.text() and "Fix the worker Python in TileScribe's settings" in box.text()
    assert not rgb_raster.with_name("rgb.tilescribe.sqlite").exists()  # nothing half-made


def test_worker_python_lacking_the_model_libraries(plugin, rgb_raster, add_raster, wait_task):
    from tilescribe.plugin.qgis.settings import PluginSettings, write_settings

    write_settings(PluginSettings(worker_python="/usr/bin/python3"))  # QGIS's own Python: no models
    add_raster(rgb_raster)
    dialog = plugin.index_layer()
    dialog.testRadio.setChecked(True)
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    task = newest_task(plugin)
    wait_task(task, 60)
    text = plugin.messages.environment_dialog.text()
    assert "(/usr/bin/python3) lacks: sentence-transformers, sqlite-vec, llama-cpp-python" in text
    assert '"/usr/bin/python3" -m pip install "sentence-transformers" "sqlite-vec" "llama-cpp-python"' in text


def test_worker_python_that_cannot_start(plugin, rgb_raster, add_raster, wait_task, tmp_path):
    """A broken interpreter: the dialog quotes what it printed."""
    from tilescribe.plugin.qgis.settings import PluginSettings, write_settings

    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'Fatal Python error: init_fs_encoding: failed to get the Python codec' >&2\n"
                      "exit 1\n")
    broken.chmod(0o755)
    write_settings(PluginSettings(worker_python=str(broken), captioner="test"))
    add_raster(rgb_raster)
    task = plugin.start_index(plugin.index_layer().build_request())
    wait_task(task, 60)
    text = plugin.messages.environment_dialog.text()
    assert f"did not start with {broken}" in text and "init_fs_encoding" in text
    assert "Fix the worker Python" not in text and "pip install" in text


def test_zip_install_layout_finds_the_worker(tmp_path, qgis_app):
    """A plugin folder named tilescribe (ZIP install): any Python finds the worker module."""
    from pathlib import Path

    from tilescribe.plugin.qgis.deps import LOCAL_MODEL_MODULES, missing_modules
    from tilescribe.plugin.worker.client import WorkerClient

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tilescribe").symlink_to(Path(__file__).resolve().parents[2])
    client = WorkerClient(Path("/usr/bin/python3"), plugins / "tilescribe")
    try:
        hello = client.hello()
    finally:
        client.stop()
    assert hello["python"] == "/usr/bin/python3"
    assert missing_modules(hello, LOCAL_MODEL_MODULES) == ["sentence_transformers", "sqlite_vec", "llama_cpp"]


def test_default_environment_hint_is_make_setup():
    from tilescribe.plugin.qgis.deps import setup_hint
    from tilescribe.plugin.qgis.settings import PLUGIN_DIR, default_worker_python

    hint = setup_hint(default_worker_python(), PLUGIN_DIR)
    assert hint.endswith(f'cd "{PLUGIN_DIR}" && make setup')


def test_zip_install_without_environment_hint_is_set_up_tilescribe(tmp_path):
    from tilescribe.plugin.qgis.deps import SETUP_HINT, setup_hint
    from tilescribe.plugin.qgis.settings import default_worker_python

    folder = tmp_path / "tilescribe"
    assert setup_hint(default_worker_python(folder), folder) == SETUP_HINT  # no terminal
