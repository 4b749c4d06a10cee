"""The model picker: the catalogue with what is downloaded, a Download button (a cancellable task
with progress), the models folder, and "Use this model" filling the model fields of a dialog."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from qgis.core import QgsApplication, QgsSettings
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QAbstractItemView, QDialog, QDialogButtonBox, QFormLayout, QGridLayout, QGroupBox, QHBoxLayout, QHeaderView,
    QLabel, QLineEdit, QMessageBox, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout,
)

from ..core.errors import ModelError, TileScribeError
from ..core.models.catalogue import CatalogueEntry, ModelSpec, format_size, load_catalogue, resolve_spec
from ..core.models.folder import InstalledModel, installed_models, models_dir
from .messages import for_qgis
from .model_download import ModelDownloadTask
from .settings import PLUGIN_DIR, PREFIX, PluginSettings
from .tasks import TaskResult

COLUMNS = ("Model", "Size", "Chat family", "Licence", "On disk")
ON_DISK = COLUMNS.index("On disk")


def typed_spec(repo: str, model_file: str, mmproj_file: str) -> ModelSpec:
    """The 'From a repository' fields as what `tilescribe models download REPO --files M P` downloads;
    ModelError saying what to type where they do not name one repository and two GGUF files."""
    repo, model_file, mmproj_file = repo.strip(), model_file.strip(), mmproj_file.strip()
    if not (repo and model_file and mmproj_file):
        raise ModelError("Type the repository (OWNER/REPO, as in its address on the hub), the model file and "
                         "the projector file (both .gguf, as the repository's Files page lists them).")
    for what, name in (("model", model_file), ("projector", mmproj_file)):
        if not name.lower().endswith(".gguf"):
            raise ModelError(f"The {what} file must be a .gguf file of the repository: '{name}' is not.")
    if model_file == mmproj_file:
        raise ModelError("The model file and the projector file are two different files of the repository "
                         "(the projector's name usually contains 'mmproj').")
    return resolve_spec(repo, (model_file, mmproj_file))  # the CLI's own checks (OWNER/REPO, safe names)


class ModelPickerDialog(QDialog):
    """`chosen` (an InstalledModel) and `models_dir` (the folder setting) once accepted."""

    def __init__(self, settings: PluginSettings, parent=None, plugin_dir: Path = PLUGIN_DIR):
        super().__init__(parent)
        self.setWindowTitle("TileScribe: vision-language models")
        self.settings, self.plugin_dir = settings, Path(plugin_dir)
        self.chosen: Optional[InstalledModel] = None
        self.task: Optional[ModelDownloadTask] = None
        self.catalogue = list(load_catalogue())
        self.entries = list(self.catalogue)
        self._build()
        self.folderWidget.setFilePath(settings.models_dir)
        self.folderWidget.fileChanged.connect(lambda _path: self.refresh())
        self.refresh()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.folderWidget = QgsFileWidget(self)
        self.folderWidget.setStorageMode(QgsFileWidget.GetDirectory)
        self.folderWidget.lineEdit().setPlaceholderText(str(models_dir()))
        form.addRow("Models folder", self.folderWidget)
        layout.addLayout(form)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._enable_buttons)
        # Every column as wide as its text, On disk included; the licence (the longest, up to ~60
        # characters) takes what is left and is elided, whole in its tooltip.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Licence"), QHeaderView.Stretch)
        layout.addWidget(self.table)
        layout.addWidget(self._repository_box())
        self.progressBar, self.statusLabel = QProgressBar(self), QLabel(self)
        self.statusLabel.setWordWrap(True)
        layout.addWidget(self.progressBar)
        layout.addWidget(self.statusLabel)
        buttons = QHBoxLayout()
        self.downloadButton = QPushButton("Download", self)
        self.cancelButton = QPushButton("Cancel download", self)
        self.useButton = QPushButton("Use this model", self)
        for button in (self.downloadButton, self.cancelButton, self.useButton):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.downloadButton.clicked.connect(self.start_download)
        self.cancelButton.clicked.connect(self.cancel_download)
        self.useButton.clicked.connect(self.use_selected)
        close = QDialogButtonBox(QDialogButtonBox.Close, self)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(900, 560)

    def _repository_box(self) -> QGroupBox:
        """Any hub repository: OWNER/REPO and the two file names, downloaded as the catalogue's are."""
        box = QGroupBox("From a repository (not in the list)", self)
        form = QFormLayout(box)
        self.repoEdit = QLineEdit(box)
        self.repoEdit.setPlaceholderText("OWNER/REPO, e.g. ggml-org/SmolVLM-500M-Instruct-GGUF")
        self.modelFileEdit = QLineEdit(box)
        self.modelFileEdit.setPlaceholderText("the model's .gguf file, e.g. SmolVLM-500M-Instruct-Q8_0.gguf")
        self.mmprojFileEdit = QLineEdit(box)
        self.mmprojFileEdit.setPlaceholderText(
            "its projector's .gguf file, e.g. mmproj-SmolVLM-500M-Instruct-Q8_0.gguf")
        self.repoDownloadButton = QPushButton("Download from this repository", box)
        self.repoDownloadButton.clicked.connect(self.start_repository_download)
        form.addRow("Repository", self.repoEdit)
        form.addRow("Model file", self.modelFileEdit)
        form.addRow("Projector file", self.mmprojFileEdit)
        form.addRow("", self.repoDownloadButton)
        return box

    @property
    def models_dir(self) -> str:
        return self.folderWidget.filePath().strip()

    def installed(self) -> dict:
        return {m.repo.lower(): m for m in installed_models(models_dir(self.models_dir))}

    def refresh(self) -> None:
        installed = self.installed()
        known = {entry.repo.lower() for entry in self.catalogue}
        self.entries = self.catalogue + [_entry_of(m) for repo, m in installed.items() if repo not in known]
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            model = installed.get(entry.repo.lower())
            size = ("~" if entry.size_approximate else "") + format_size(entry.size_bytes)
            cells = (entry.title, size, entry.family, entry.licence,
                     "Downloaded" if model else "Not downloaded")
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{entry.repo}: {', '.join(entry.files)}\nLicence: {entry.licence}\n{entry.note}")
                self.table.setItem(row, column, item)
        self._enable_buttons()

    def selected_entry(self):
        rows = {index.row() for index in self.table.selectedIndexes()}
        return self.entries[rows.pop()] if len(rows) == 1 else None

    def _enable_buttons(self) -> None:
        entry = self.selected_entry()
        busy = self.task is not None
        self.downloadButton.setEnabled(entry in self.catalogue and not busy)
        self.repoDownloadButton.setEnabled(not busy)
        self.cancelButton.setEnabled(busy)
        self.useButton.setEnabled(entry is not None and entry.repo.lower() in self.installed() and not busy)
        self.folderWidget.setEnabled(not busy)

    def start_download(self) -> Optional[ModelDownloadTask]:
        entry = self.selected_entry()
        if entry is None or self.task is not None:
            return None
        return self._download(entry.name, entry.title)

    def start_repository_download(self) -> Optional[ModelDownloadTask]:
        """The typed repository and files, through the same download as a catalogue entry."""
        if self.task is not None:
            return None
        try:
            spec = typed_spec(self.repoEdit.text(), self.modelFileEdit.text(), self.mmprojFileEdit.text())
        except ModelError as exc:
            self.statusLabel.setText(for_qgis(str(exc)))
            return None
        return self._download(spec.repo, spec.repo, spec.files)

    def _download(self, name: str, title: str, files=()) -> ModelDownloadTask:
        self.task = ModelDownloadTask(self.settings.python(), self.plugin_dir, name, self.models_dir,
                                      self._download_done, files)
        self.task.progressChanged.connect(lambda value: self.progressBar.setValue(int(value)))
        self.task.status.connect(self.statusLabel.setText)
        self.progressBar.setValue(0)
        self.statusLabel.setText(f"Starting the download of {title}…")
        QgsApplication.taskManager().addTask(self.task)
        self._enable_buttons()
        return self.task

    def cancel_download(self) -> None:
        if self.task is not None:
            self.statusLabel.setText("Stopping the download…")
            self.task.cancel()

    def _download_done(self, result: TaskResult) -> None:
        self.task = None
        try:
            self._show_outcome(result)
        except RuntimeError:  # the dialog was closed and deleted meanwhile: nothing to show
            pass

    def _show_outcome(self, result: TaskResult) -> None:
        if result.cancelled:
            self.statusLabel.setText("Download stopped. What was fetched is kept: Download again to resume.")
        elif result.error is not None:
            self.statusLabel.setText(for_qgis(f"Download failed: {result.error}"))
        else:
            self.progressBar.setValue(100)
            self.statusLabel.setText(f"Downloaded into {result.value['folder']} (chat family "
                                     f"{result.value['family']}). Click Use this model.")
        self.refresh()
        repo = str((result.value or {}).get("repo", "")).lower()
        rows = [row for row, entry in enumerate(self.entries) if entry.repo.lower() == repo]
        if rows:  # the downloaded model is the one selected: Use this model takes it
            self.table.selectRow(rows[0])

    def use_selected(self) -> None:
        entry = self.selected_entry()
        self.chosen = self.installed().get(entry.repo.lower()) if entry else None
        if self.chosen is not None:
            self.accept()

    def reject(self) -> None:
        self.cancel_download()  # closing the dialog stops its download; the next one resumes
        super().reject()


def _entry_of(model: InstalledModel) -> CatalogueEntry:
    """A row for a model downloaded from outside the catalogue (`tilescribe models download REPO --files`)."""
    size = model.model.stat().st_size + model.mmproj.stat().st_size
    return CatalogueEntry(model.name, f"{model.repo} (downloaded)", model.repo, model.model.name, model.mmproj.name,
                          size, False, model.family, "see the repository", f"in {model.folder}")


def add_model_picker_button(form, settings_of: Callable[[], PluginSettings],
                            store: Callable[[PluginSettings], None]) -> QPushButton:
    """A "Download / choose…" button beside a dialog's model fields (index and settings dialogs).

    The chosen pair fills `form.modelFile` / `form.mmprojFile`; the models folder goes to `store`.
    """
    button = QPushButton("Download / choose…", form)
    button.setToolTip("Pick a recommended vision-language model, download it, and use it")
    layout = form.modelFile.parentWidget().layout()
    if isinstance(layout, QGridLayout):
        row = layout.getItemPosition(layout.indexOf(form.modelFile))[0]
        layout.addWidget(button, row, 2)
    elif isinstance(layout, QFormLayout):
        layout.addRow("", button)
    button.clicked.connect(lambda: open_picker(form, settings_of, store))
    return button


def open_picker(form, settings_of, store) -> Optional[ModelPickerDialog]:
    """Opens the picker window-modal over `form` (kept as form.modelPicker); its choice fills the form."""
    try:
        dialog = ModelPickerDialog(settings_of(), form)
    except TileScribeError as exc:  # a broken extra catalogue (TILESCRIBE_CATALOGUE)
        QMessageBox.warning(form, "TileScribe", str(exc))
        return None
    form.modelPicker = dialog
    dialog.finished.connect(lambda _code: _picker_closed(form, dialog, settings_of, store))
    dialog.open()
    return dialog


def _picker_closed(form, dialog: ModelPickerDialog, settings_of, store) -> None:
    # The folder is a preference of its own: kept even when the form is cancelled.
    QgsSettings().setValue(PREFIX + "models_dir", dialog.models_dir)
    store(replace(settings_of(), models_dir=dialog.models_dir))
    if dialog.result() == QDialog.Accepted and dialog.chosen is not None:
        form.modelFile.setFilePath(str(dialog.chosen.model))
        form.mmprojFile.setFilePath(str(dialog.chosen.mmproj))
        if hasattr(form, "localRadio"):
            form.localRadio.setChecked(True)
    form.modelPicker = None
    dialog.deleteLater()
