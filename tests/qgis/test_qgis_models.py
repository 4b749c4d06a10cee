"""The model picker in a headless QGIS: real buttons, a real download task (a `tilescribe models
download` process) against the fake hub on 127.0.0.1, cancel and resume, errors shown in the dialog."""

from __future__ import annotations

import json
import time

import pytest

from fixtures_hub import TINY_REPO, hub_serving

TINY_NAME = "tiny-llava"


@pytest.fixture
def tiny_catalogue(tiny_pair, tmp_path, monkeypatch):
    """An extra catalogue (TILESCRIBE_CATALOGUE) with the tiny pair, so the picker lists it."""
    text, mmproj = tiny_pair
    path = tmp_path / "extra-catalogue.json"
    path.write_text(json.dumps({"models": [{
        "name": TINY_NAME, "title": "Tiny LLaVA (random weights)", "repo": TINY_REPO, "model_file": text.name,
        "mmproj_file": mmproj.name, "size_bytes": text.stat().st_size + mmproj.stat().st_size,
        "size_approximate": False, "family": "llava-1-5", "licence": "MIT", "note": "tests only"}]}))
    monkeypatch.setenv("TILESCRIBE_CATALOGUE", str(path))
    return path


@pytest.fixture
def hub_for_process(tiny_pair, monkeypatch):
    """The fake hub, with the environment the download process inherits pointing at it."""
    fake = hub_serving(tiny_pair)
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # as for a user: conftest sets it for the test process
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    yield fake
    fake.stop()


def picker(tmp_path):
    from tilescribe.plugin.qgis.model_picker import ModelPickerDialog
    from tilescribe.plugin.qgis.settings import PluginSettings

    dialog = ModelPickerDialog(PluginSettings(models_dir=str(tmp_path / "models")))
    row = [e.name for e in dialog.entries].index(TINY_NAME)
    dialog.table.selectRow(row)
    return dialog, row


def wait_idle(qtbot, dialog, timeout_s=60):
    qtbot.waitUntil(lambda: dialog.task is None, timeout=int(timeout_s * 1000))


def test_picker_lists_the_catalogue_and_downloads(qtbot, tiny_catalogue, hub_for_process, tmp_path):
    dialog, row = picker(tmp_path)
    assert dialog.table.rowCount() >= 5 and dialog.table.item(row, 4).text() == "Not downloaded"
    assert not dialog.useButton.isEnabled()
    dialog.downloadButton.click()
    assert dialog.cancelButton.isEnabled() and not dialog.downloadButton.isEnabled()
    wait_idle(qtbot, dialog)
    assert dialog.table.item(row, 4).text() == "Downloaded", dialog.statusLabel.text()
    assert dialog.progressBar.value() == 100 and "chat family llava-1-5" in dialog.statusLabel.text()
    dialog.useButton.click()
    assert dialog.result() == dialog.Accepted and dialog.chosen.family == "llava-1-5"
    assert dialog.chosen.model.read_bytes() == hub_for_process.repos[TINY_REPO][dialog.chosen.model.name]
    dialog.deleteLater()


def test_cancel_keeps_the_partial_file_and_the_next_download_resumes(qtbot, tiny_catalogue, hub_for_process,
                                                                      tiny_pair, tmp_path):
    text, _ = tiny_pair
    big = text.read_bytes() + bytes(12 * 1024 * 1024)  # more than one 10 MiB write
    hub_for_process.add(TINY_REPO, text.name, big)
    hub_for_process.stall_after[text.name] = 11 * 1024 * 1024
    dialog, row = picker(tmp_path)
    dialog.downloadButton.click()
    parts = tmp_path / "models" / TINY_REPO.replace("/", "--") / ".partial"
    qtbot.waitUntil(lambda: any(p.stat().st_size >= 10 * 1024 * 1024 for p in parts.glob("*.part")),
                    timeout=60000)
    dialog.cancelButton.click()
    wait_idle(qtbot, dialog)
    assert "Download again to resume" in dialog.statusLabel.text()
    assert dialog.table.item(row, 4).text() == "Not downloaded"
    hub_for_process.stall_after.clear()
    dialog.downloadButton.click()
    wait_idle(qtbot, dialog)
    assert dialog.table.item(row, 4).text() == "Downloaded", dialog.statusLabel.text()
    assert hub_for_process.ranges(text.name)[-1] == f"bytes={10 * 1024 * 1024}-"
    dialog.deleteLater()


def test_unreachable_hub_is_explained_in_the_dialog(qtbot, tiny_catalogue, monkeypatch, closed_port, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    dialog, row = picker(tmp_path)
    started = time.monotonic()
    dialog.downloadButton.click()
    wait_idle(qtbot, dialog)
    assert dialog.statusLabel.text().startswith("Download failed: Cannot reach the model hub at http://127.0.0.1")
    assert dialog.downloadButton.isEnabled() and time.monotonic() - started < 60
    dialog.deleteLater()


def test_index_dialog_button_fills_the_model_fields_and_family(qtbot, tiny_catalogue, hub_for_process, tmp_path):
    from tilescribe.plugin.qgis.index_dialog import IndexDialog
    from tilescribe.plugin.qgis.indexing import captioner_settings
    from tilescribe.plugin.qgis.settings import PluginSettings, read_settings

    dialog = IndexDialog(PluginSettings(models_dir=str(tmp_path / "models")))
    dialog.show()
    dialog.pickerButton.click()  # the user: Download / choose…, pick the row, Download, Use this model
    picker_dialog = dialog.modelPicker
    picker_dialog.table.selectRow([e.name for e in picker_dialog.entries].index(TINY_NAME))
    picker_dialog.downloadButton.click()
    wait_idle(qtbot, picker_dialog)
    picker_dialog.useButton.click()
    qtbot.waitUntil(lambda: dialog.modelPicker is None, timeout=5000)
    model = tmp_path / "models" / TINY_REPO.replace("/", "--") / "tiny-llava-text.gguf"
    assert dialog.modelFile.filePath() == str(model) and dialog.localRadio.isChecked()
    chosen = dialog.chosen_settings()
    assert chosen.models_dir == str(tmp_path / "models") == read_settings().models_dir
    assert captioner_settings(chosen).family == "llava-1-5"
    dialog.close()
    dialog.deleteLater()


def test_download_process_is_online_unless_the_user_says_offline(monkeypatch):
    from tilescribe.plugin.qgis.model_download import download_command, download_environment
    from tilescribe.plugin.qgis.settings import PLUGIN_DIR
    from tilescribe.plugin.worker.client import worker_environment

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert worker_environment(PLUGIN_DIR)["HF_HUB_OFFLINE"] == "1"  # the worker stays offline
    assert "HF_HUB_OFFLINE" not in download_environment(PLUGIN_DIR)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert download_environment(PLUGIN_DIR)["HF_HUB_OFFLINE"] == "1"
    assert download_command("py", "moondream2", "")[-2:] == ["--progress", "json"]
    assert download_command("py", "moondream2", "/d")[-2:] == ["--dir", "/d"]


def test_settings_dialog_has_the_picker_and_keeps_its_folder(qtbot, tmp_path):
    from tilescribe.plugin.qgis.settings import PluginSettings
    from tilescribe.plugin.qgis.settings_dialog import SettingsDialog

    dialog = SettingsDialog(PluginSettings())
    dialog.pickerButton.click()
    picker_dialog = dialog.modelPicker
    assert picker_dialog.isVisible() and picker_dialog.table.rowCount() >= 4
    picker_dialog.folderWidget.setFilePath(str(tmp_path / "elsewhere"))
    picker_dialog.reject()
    qtbot.waitUntil(lambda: dialog.modelPicker is None, timeout=5000)
    assert dialog.chosen_settings().models_dir == str(tmp_path / "elsewhere")
    dialog.deleteLater()


def test_a_model_downloaded_from_any_repository_is_listed_and_usable(qtbot, tiny_pair, tmp_path):
    """`tilescribe models download REPO --files ...` (not in the catalogue) shows up in the picker."""
    from tilescribe.plugin.core.models.folder import FileRecord, Manifest, repo_folder, write_manifest
    from tilescribe.plugin.qgis.model_picker import ModelPickerDialog
    from tilescribe.plugin.qgis.settings import PluginSettings

    folder = repo_folder(tmp_path, "someone/other-vlm-GGUF")
    folder.mkdir(parents=True)
    records = []
    for path, role in zip(tiny_pair, ("model", "mmproj")):
        (folder / path.name).write_bytes(path.read_bytes())
        records.append(FileRecord(path.name, role, path.stat().st_size, "0" * 64))
    manifest = Manifest("someone/other-vlm-GGUF", "someone/other-vlm-GGUF", "main", "c" * 40, "llava-1-5")
    manifest.merge(records)
    write_manifest(folder, manifest)
    dialog = ModelPickerDialog(PluginSettings(models_dir=str(tmp_path)))
    row = len(dialog.catalogue)
    assert dialog.table.item(row, 0).text() == "someone/other-vlm-GGUF (downloaded)"
    dialog.table.selectRow(row)
    assert dialog.useButton.isEnabled() and not dialog.downloadButton.isEnabled()
    dialog.useButton.click()
    assert dialog.chosen.model == folder / tiny_pair[0].name
    dialog.deleteLater()


def test_a_typed_repository_and_files_are_downloaded_and_usable(qtbot, hub_for_process, tiny_pair, tmp_path):
    """OWNER/REPO and the two file names typed in the picker: the same download as a catalogue entry."""
    from tilescribe.plugin.qgis.model_picker import ModelPickerDialog
    from tilescribe.plugin.qgis.settings import PluginSettings

    text, mmproj = tiny_pair
    dialog = ModelPickerDialog(PluginSettings(models_dir=str(tmp_path / "models")))
    assert TINY_REPO.lower() not in {entry.repo.lower() for entry in dialog.entries}
    dialog.repoEdit.setText(f" {TINY_REPO} ")
    dialog.modelFileEdit.setText(text.name)
    dialog.mmprojFileEdit.setText(mmproj.name)
    dialog.repoDownloadButton.click()
    assert dialog.task is not None and "--files" in dialog.task.command and not dialog.repoDownloadButton.isEnabled()
    wait_idle(qtbot, dialog)
    assert "Click Use this model" in dialog.statusLabel.text(), dialog.statusLabel.text()
    row = [entry.repo for entry in dialog.entries].index(TINY_REPO)
    assert dialog.table.item(row, 4).text() == "Downloaded" and dialog.selected_entry().repo == TINY_REPO
    dialog.useButton.click()
    assert dialog.chosen.model.read_bytes() == hub_for_process.repos[TINY_REPO][text.name]
    dialog.deleteLater()


@pytest.mark.parametrize("repo, model, mmproj, says", [
    ("", "m.gguf", "p.gguf", "Type the repository (OWNER/REPO"),
    ("owner/repo", "model.bin", "p.gguf", "The model file must be a .gguf file of the repository: 'model.bin'"),
    ("owner/repo", "same.gguf", "same.gguf", "two different files"),
    ("not a repo", "m.gguf", "p.gguf", "nor a hub repository (owner/name). The model picker"),
    ("owner/repo", "../m.gguf", "p.gguf", "Not a file name inside a repository"),
])
def test_typed_repository_is_validated_with_a_clear_message(qtbot, tmp_path, repo, model, mmproj, says):
    from tilescribe.plugin.qgis.messages import CLI_ADVICE
    from tilescribe.plugin.qgis.model_picker import ModelPickerDialog
    from tilescribe.plugin.qgis.settings import PluginSettings

    dialog = ModelPickerDialog(PluginSettings(models_dir=str(tmp_path / "models")))
    for edit, value in ((dialog.repoEdit, repo), (dialog.modelFileEdit, model), (dialog.mmprojFileEdit, mmproj)):
        edit.setText(value)
    dialog.repoDownloadButton.click()
    assert dialog.task is None and says in dialog.statusLabel.text(), dialog.statusLabel.text()
    assert not CLI_ADVICE.search(dialog.statusLabel.text())
    dialog.deleteLater()


def test_on_disk_column_is_not_cut(qtbot, tmp_path):
    """Every column's section holds its widest text, and the last one ends inside the visible table."""
    from tilescribe.plugin.qgis.model_picker import ON_DISK, ModelPickerDialog
    from tilescribe.plugin.qgis.settings import PluginSettings

    dialog = ModelPickerDialog(PluginSettings(models_dir=str(tmp_path / "models")))
    dialog.show()
    qtbot.waitExposed(dialog)
    header, table = dialog.table.horizontalHeader(), dialog.table
    widest = max(table.fontMetrics().horizontalAdvance(table.item(row, ON_DISK).text())
                 for row in range(table.rowCount()))
    widest = max(widest, header.fontMetrics().horizontalAdvance("On disk"))
    assert header.sectionSize(ON_DISK) >= widest
    assert header.sectionViewportPosition(ON_DISK) + header.sectionSize(ON_DISK) <= table.viewport().width()
    dialog.deleteLater()
