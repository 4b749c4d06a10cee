"""The Index layer dialog: which rasters (web layers rendered first), which captioning model, tiles, and
where the index goes (beside a single raster; one project index for several)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from qgis.core import Qgis, QgsMapLayerType, QgsProject
from qgis.gui import QgsFileWidget
from qgis.PyQt import uic
from qgis.PyQt.QtCore import QEvent, Qt, QTimer
from qgis.PyQt.QtWidgets import (QDialog, QDialogButtonBox, QFrame, QLineEdit, QListWidgetItem, QScrollArea,
                                 QVBoxLayout, QWidget)

from ..core.errors import RasterError, TileScribeError
from ..core.indexing.index_settings import INDEX_SUFFIX
from .indexing import IndexRequest, captioner_settings, default_index_path, project_index_path, raster_file
from .messages import push_wrapped
from .model_fields import enable_slots, fill_engine_choices, model_field_values, show_model_fields
from .model_picker import add_model_picker_button
from .render_fields import RenderFields
from .postgres_connections import add_index_target
from .settings import CAPTIONER_LOCAL, CAPTIONER_SERVER, CAPTIONER_TEST, PluginSettings
from .web_render import needs_render, plan_request

UI_FILE = Path(__file__).resolve().parents[2] / "ui" / "index_dialog.ui"
FORM_CLASS, _ = uic.loadUiType(str(UI_FILE))
GGUF_FILTER = "GGUF model (*.gguf);;All files (*)"


class IndexDialog(QDialog, FORM_CLASS):
    """Accepts only a complete request: problems show in the dialog's own message bar."""

    def __init__(self, settings: PluginSettings, layer=None, parent=None, canvas=None):
        super().__init__(parent)
        self.setupUi(self)
        self.settings = settings
        self.index_requests: list[IndexRequest] = []
        self.renderFields = RenderFields(self, canvas)
        self.mainLayout.insertWidget(self.mainLayout.indexOf(self.modelGroup), self.renderFields)
        self._scroll_body()
        self._fill_layers(layer)
        for widget in (self.modelFile, self.mmprojFile):
            widget.setFilter(GGUF_FILTER)
        self.indexFile.setStorageMode(QgsFileWidget.SaveFile)
        self.indexFile.setFilter(f"TileScribe index (*{INDEX_SUFFIX})")
        self.buttonBox.button(QDialogButtonBox.Ok).setText("Index")
        self.buttonBox.accepted.connect(self.accept)
        self.buttonBox.rejected.connect(self.reject)
        self.layersList.itemChanged.connect(self._layers_changed)
        self.allRastersCheck.toggled.connect(self._all_toggled)
        for radio in (self.localRadio, self.serverRadio, self.testRadio):
            radio.toggled.connect(self._enable_model_fields)
        self.pickerButton = add_model_picker_button(self, lambda: self.settings, self._store_models_dir)
        fill_engine_choices(self, settings)
        self.postgresTarget = add_index_target(self)  # "Index into": the file, or a saved PostgreSQL connection
        self._clear_problem_on_change()
        self._load(settings)
        self.renderFields.changed.connect(self._show_estimate)
        for edit in self.renderFields.findChildren(QLineEdit):
            edit.installEventFilter(self)  # Enter confirms a typed coordinate, it does not start indexing
        for spin in (self.tileSizeSpin, self.overlapSpin):
            spin.valueChanged.connect(self._show_estimate)
        self._layers_changed()
        self._fit_height()  # before it is shown: QDialog centres itself over QGIS with this size

    def _scroll_body(self) -> None:
        """Everything between the message bar and the buttons scrolls: with the web-layer box the
        dialog was taller than a 1000 px screen, its top (title, message bar) off-screen."""
        body = QWidget(self)
        body.setObjectName("indexDialogBody")
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 0, 0)
        main = self.mainLayout
        for item in [main.itemAt(i) for i in range(main.count())]:
            if item.widget() in (self.messageBar, self.buttonBox):
                continue
            main.removeItem(item)
            if item.widget() is not None:
                column.addWidget(item.widget())
            elif item.layout() is not None:
                item.layout().setParent(None)
                column.addLayout(item.layout())
        self.scrollArea = QScrollArea(self)
        self.scrollArea.setWidgetResizable(True)
        self.scrollArea.setFrameShape(QFrame.NoFrame)
        self.scrollArea.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scrollArea.setWidget(body)
        main.insertWidget(main.indexOf(self.buttonBox), self.scrollArea, 1)
        self.body = body

    def _fit_height(self) -> None:
        """As tall as the content, at most 90 % of the screen's free height (then the body scrolls)."""
        # Never narrower than the content (it scrolls up and down only): sized before the dialog is
        # shown, the body's hint came short and its right edge was cut behind a sideways scroll bar.
        self.scrollArea.setMinimumWidth(self.body.minimumSizeHint().width()
                                        + self.scrollArea.verticalScrollBar().sizeHint().width() + 4)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        wanted = (self.body.sizeHint().height() + self.buttonBox.sizeHint().height()
                  + self.messageBar.sizeHint().height() + 40)
        limit = int(screen.height() * 0.9) if screen is not None else wanted
        self.resize(max(self.width(), self.body.sizeHint().width() + 40), min(wanted, limit))

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        QTimer.singleShot(0, self._fit_width)  # once shown, the content's hints are those painted

    def _fit_width(self) -> None:
        try:
            needed = self.body.minimumSizeHint().width() + self.scrollArea.verticalScrollBar().sizeHint().width() + 4
            if self.scrollArea.width() < needed:
                self.scrollArea.setMinimumWidth(needed)
                self.resize(self.width() + needed - self.scrollArea.width(), self.height())
        except RuntimeError:  # closed and deleted meanwhile
            pass

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        """Enter in the extent's or resolution's fields moves to the next field instead of pressing Index
        (the dialog's default button): typing four coordinates, each with Enter, started indexing after
        the first one."""
        if event.type() == QEvent.KeyPress and event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.focusNextChild()
            return True
        return super().eventFilter(watched, event)

    @property
    def index_request(self) -> Optional[IndexRequest]:
        """The first request (one layer: the only one), once accepted."""
        return self.index_requests[0] if self.index_requests else None

    # -- layers ------------------------------------------------------------------------

    def _fill_layers(self, chosen) -> None:
        """Every raster layer of the project, in the layer tree's order; `chosen` ticked."""
        self.layersList.clear()
        for layer in project_rasters():
            label = f"{layer.name()} (web layer: rendered first)" if needs_render(layer) else layer.name()
            item = QListWidgetItem(label, self.layersList)
            item.setData(Qt.UserRole, layer.id())
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if chosen is not None and layer.id() == chosen.id() else Qt.Unchecked)

    def checked_layers(self) -> list:
        project = QgsProject.instance()
        layers = []
        for row in range(self.layersList.count()):
            item = self.layersList.item(row)
            layer = project.mapLayer(item.data(Qt.UserRole))
            if item.checkState() == Qt.Checked and layer is not None:
                layers.append(layer)
        return layers

    def set_checked_layers(self, layers) -> None:
        wanted = {layer.id() for layer in layers if layer is not None}
        for row in range(self.layersList.count()):
            item = self.layersList.item(row)
            item.setCheckState(Qt.Checked if item.data(Qt.UserRole) in wanted else Qt.Unchecked)

    def _all_toggled(self, checked: bool) -> None:
        if checked:
            for row in range(self.layersList.count()):
                self.layersList.item(row).setCheckState(Qt.Checked)
        self.layersList.setEnabled(not checked)

    def _layers_changed(self, *_args) -> None:
        self.messageBar.clearWidgets()
        layers = self.checked_layers()
        to_render = [layer for layer in layers if needs_render(layer)]
        if self.renderFields.isHidden() == bool(to_render):
            self.renderFields.setVisible(bool(to_render))
            if self.isVisible():
                self._fit_height()
                QTimer.singleShot(0, self._fit_width)
        if to_render:
            self.renderFields.set_layer(to_render[0])
        self.indexFile.setFilePath(self._default_index(layers))
        self.indexFile.lineEdit().setPlaceholderText(
            "beside the rendered GeoTIFF" if len(layers) == 1 and to_render else "")
        self._show_estimate()

    def _default_index(self, layers) -> str:
        """Beside a single raster file; one project index for several layers (never one file each)."""
        if len(layers) > 1:
            return project_index_path(layers, self.renderFields.folder())
        if len(layers) == 1 and not needs_render(layers[0]):
            return default_index_path(raster_file(layers[0]))
        return ""

    def _show_estimate(self, *_args) -> None:
        if not self.renderFields.isVisibleTo(self):
            return
        texts = []
        for layer in (layer for layer in self.checked_layers() if needs_render(layer)):
            try:
                request = self._render_request(layer)
                size = request.plan.describe(request.resolution, request.crs, self.tileSizeSpin.value())
                again = " Already rendered: indexed as it is." if request.rendered() else ""
                texts.append(f"{layer.name()}: {size}{again}")
            except TileScribeError as exc:
                texts.append(f"{layer.name()}: {exc}")
        self.renderFields.estimateLabel.setText("\n".join(texts))

    def _render_request(self, layer):
        fields = self.renderFields
        return plan_request(layer, fields.extent_for(layer), fields.resolution(), fields.folder(),
                            self.tileSizeSpin.value(), self.overlapSpin.value())

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

    def build_requests(self) -> list[IndexRequest]:
        """One request per ticked layer (in the list's order), or a TileScribeError naming what to fix."""
        layers = self.checked_layers()
        if not layers:
            raise RasterError("No raster layer selected: tick a raster layer (or All rasters in the project).")
        settings = self.chosen_settings()
        if settings.overlap >= settings.tile_size:
            raise TileScribeError(f"Overlap ({settings.overlap} px) must be smaller than the tile size "
                                  f"({settings.tile_size} px).")
        captioner = captioner_settings(settings)
        chosen_db = self.indexFile.filePath().strip()
        postgres = self.postgresTarget.chosen_db()  # None: a file
        requests = []
        for layer in layers:
            render = self._render_request(layer) if needs_render(layer) else None
            raster = render.path if render is not None else raster_file(layer)
            db = postgres or chosen_db or default_index_path(raster)
            if not postgres and not db.endswith(INDEX_SUFFIX):
                db += INDEX_SUFFIX
            requests.append(IndexRequest(layer.name(), raster, db, captioner, settings.tile_size, settings.overlap,
                                         settings.variants, render))
        return requests

    def build_request(self) -> IndexRequest:
        return self.build_requests()[0]

    def accept(self) -> None:
        try:
            self.index_requests = self.build_requests()
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


def project_rasters() -> list:
    """The project's raster layers in the layer tree's order (what the user sees in Layers)."""
    tree = [node.layer() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    seen = [layer for layer in tree if layer is not None and layer.type() == QgsMapLayerType.RasterLayer]
    rest = [layer for layer in QgsProject.instance().mapLayers().values()
            if layer.type() == QgsMapLayerType.RasterLayer and layer not in seen]
    return seen + rest
