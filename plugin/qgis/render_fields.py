"""The Index dialog's box for layers that are not files: extent, resolution, folder, size, terms of use."""

from __future__ import annotations

from qgis.core import QgsProject, QgsRectangle
from qgis.gui import QgsDoubleSpinBox, QgsExtentGroupBox, QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout

from .web_render import TERMS_NOTE, default_resolution, in_crs, render_crs


class RenderFields(QGroupBox):
    """Shown while a ticked layer needs rendering; `changed` when anything the estimate uses changes."""

    changed = pyqtSignal()

    def __init__(self, parent, canvas=None):
        super().__init__("Web and other non-file layers: rendered to a GeoTIFF first", parent)
        self.setObjectName("renderGroup")
        self.canvas = canvas
        self.layer = None
        layout = QVBoxLayout(self)
        # QGIS's own extent box: current map view, a layer's extent, or drawn on the map.
        self.extentBox = QgsExtentGroupBox(self)
        self.extentBox.setObjectName("renderExtent")
        self.extentBox.setTitle("Extent")
        self.extentBox.setCheckable(False)
        if canvas is not None:
            self.extentBox.setMapCanvas(canvas)
        layout.addWidget(self.extentBox)
        form = QFormLayout()
        self.resolutionSpin = QgsDoubleSpinBox(self)
        self.resolutionSpin.setObjectName("renderResolution")
        self.resolutionSpin.setDecimals(6)
        self.resolutionSpin.setRange(0.000001, 1e7)
        self.resolutionSpin.setToolTip("Ground size of one pixel of the rendered GeoTIFF, in the layer's map units "
                                       "(metres for Web Mercator); the default is what the map view shows now")
        form.addRow("Resolution (map units per pixel)", self.resolutionSpin)
        self.folderWidget = QgsFileWidget(self)
        self.folderWidget.setObjectName("renderFolder")
        self.folderWidget.setStorageMode(QgsFileWidget.GetDirectory)
        form.addRow("Save the GeoTIFF in", self.folderWidget)
        layout.addLayout(form)
        self.estimateLabel = QLabel(self)
        self.estimateLabel.setObjectName("renderEstimate")
        self.estimateLabel.setWordWrap(True)
        layout.addWidget(self.estimateLabel)
        self.termsLabel = QLabel(TERMS_NOTE, self)
        self.termsLabel.setObjectName("renderTerms")
        self.termsLabel.setWordWrap(True)
        layout.addWidget(self.termsLabel)
        self.extentBox.extentChanged.connect(lambda _extent: self.changed.emit())
        self.resolutionSpin.valueChanged.connect(lambda _value: self.changed.emit())
        self.folderWidget.fileChanged.connect(lambda _path: self.changed.emit())
        project = QgsProject.instance()
        self.folderWidget.setFilePath(project.absolutePath() if project.fileName() else "")

    def set_layer(self, layer) -> None:
        """The first layer to render sets the CRS; the extent starts as the map view, the resolution as its scale."""
        if layer is None or layer is self.layer:
            return
        self.layer = layer
        crs = render_crs(layer)
        self.extentBox.setOutputCrs(crs)
        self.extentBox.setOriginalExtent(layer.extent(), crs)
        if self.canvas is not None:
            self.extentBox.setCurrentExtent(self.canvas.extent(), self.canvas.mapSettings().destinationCrs())
            self.extentBox.setOutputExtentFromCurrent()
        else:
            self.extentBox.setOutputExtentFromOriginal()
        self.resolutionSpin.setValue(default_resolution(self.canvas, crs))

    def extent_for(self, layer) -> QgsRectangle:
        """The chosen extent in `layer`'s CRS (the box shows it in the first web layer's)."""
        extent = self.extentBox.outputExtent()
        moved = in_crs(extent, self.extentBox.outputCrs(), render_crs(layer))
        return moved if moved is not None else QgsRectangle()

    def resolution(self) -> float:
        return float(self.resolutionSpin.value())

    def folder(self) -> str:
        return self.folderWidget.filePath().strip()
