"""The plugin class: actions, dock, inspect tool, worker; unload() undoes exactly what initGui() did."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from qgis.core import QgsApplication, QgsMapLayerType, QgsProject, QgsRectangle
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .deps import setup_hint
from .dock import SearchDock
from .highlight import flash
from .index_dialog import IndexDialog
from .index_queue import IndexQueue
from .indexing import IndexRequest, index_path_beside
from .inspect_tool import CaptionsDialog, InspectTool
from .messages import Messages
from .postgres_connections import display_name
from .search_controller import SearchController
from .wording import count
from .settings import CAPTIONER_TEST, PLUGIN_DIR, read_settings, write_settings
from .settings_dialog import SettingsDialog
from .setup_task import EnvironmentSetup
from .tasks import IndexTask, TaskResult, TaskRunner, TileAtTask
from ..worker.client import WorkerClient

MENU = "&TileScribe"  # under the Raster menu (Raster > TileScribe)
ICON = str(Path(__file__).resolve().parents[2] / "resources" / "icon.svg")


class TileScribePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar = None
        self.dock: Optional[SearchDock] = None
        self.search: Optional[SearchController] = None
        self.inspect_tool: Optional[InspectTool] = None
        self.captions_dialog: Optional[CaptionsDialog] = None
        self.index_dialog: Optional[IndexDialog] = None
        self.messages: Optional[Messages] = None
        self.runner: Optional[TaskRunner] = None
        self._client: Optional[WorkerClient] = None
        self.environment_setup: Optional[EnvironmentSetup] = None
        self.provider = None  # the Processing provider (initProcessing)

    # -- lifecycle ---------------------------------------------------------------------

    def initProcessing(self) -> None:
        """Adds the TileScribe Processing provider (QGIS calls it before initGui; qgis_process only it)."""
        from .processing.provider import TileScribeProvider

        if self.provider is None:
            self.provider = TileScribeProvider(self.client)
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()  # QGIS 3.22 calls initProcessing itself too: adding twice is avoided
        self.messages = Messages(self.iface)
        self.runner = TaskRunner()
        self.toolbar = self.iface.addToolBar("TileScribe")
        self.toolbar.setObjectName("TileScribeToolbar")
        self.dock = SearchDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.search = SearchController(self.iface, self.dock, self.client, self.runner, self.messages,
                                       read_settings().k)
        self.environment_setup = EnvironmentSetup(self.iface, self.runner, self.messages, self._stop_worker)
        self.queue = IndexQueue(self.runner, self.client, self.messages, self._index_done)
        self._closed_projects_jobs: list[IndexRequest] = []
        QgsProject.instance().cleared.connect(self._project_cleared)
        self.environment_setup.attach_dock(self.dock)
        self.index_action = self._add_action(QIcon(ICON), "Index layer…", self.index_layer)
        self.dock_action = self.dock.toggleViewAction()
        self.dock_action.setIcon(QgsApplication.getThemeIcon("/mActionFilter2.svg"))
        self.dock_action.setText("TileScribe search")
        self._add(self.dock_action)
        self.inspect_action = self._add_action(QgsApplication.getThemeIcon("/mActionIdentify.svg"),
                                               "Inspect tile captions", self.activate_inspect)
        self.inspect_action.setCheckable(True)
        self.inspect_tool = InspectTool(self.iface.mapCanvas(), self.inspect_action)
        self.inspect_tool.canvasClicked.connect(self.inspect_at)
        self.settings_action = self._add_action(QgsApplication.getThemeIcon("/mActionOptions.svg"),
                                                "Settings…", self.open_settings, toolbar=False)

    def _add_action(self, icon: QIcon, text: str, slot, toolbar: bool = True) -> QAction:
        action = QAction(icon, text, self.iface.mainWindow())
        action.setObjectName("TileScribe" + "".join(word.capitalize() for word in text.strip("…").split()))
        action.triggered.connect(slot)
        return self._add(action, toolbar)

    def _add(self, action: QAction, toolbar: bool = True) -> QAction:
        self.iface.addPluginToRasterMenu(MENU, action)
        if toolbar:
            self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        self.runner.close()
        QgsProject.instance().cleared.disconnect(self._project_cleared)
        canvas = self.iface.mapCanvas()
        if canvas.mapTool() is self.inspect_tool:
            canvas.unsetMapTool(self.inspect_tool)
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.toolbar.removeAction(action)
            if action is not self.dock_action:  # the dock owns its toggle action
                action.deleteLater()
        self.actions = []
        self.search.unload()
        for dialog in (self.captions_dialog, self.index_dialog):
            if dialog is not None:
                dialog.close()
                dialog.deleteLater()
        self.messages.close()
        self.environment_setup.unload()
        self.iface.removeDockWidget(self.dock)
        self.dock.deleteLater()
        self.iface.mainWindow().removeToolBar(self.toolbar)
        self.toolbar.deleteLater()
        self.inspect_tool.deleteLater()
        self.dock = self.toolbar = self.search = self.inspect_tool = None
        self.captions_dialog = self.index_dialog = None
        self.environment_setup = None
        self._stop_worker()

    def _stop_worker(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client = None

    def client(self) -> WorkerClient:
        """The worker client, rebuilt when the worker Python setting changed."""
        python = read_settings().python()
        if self._client is not None and self._client.python != python:
            self._client.stop()
            self._client = None
        if self._client is None:
            self._client = WorkerClient(python, PLUGIN_DIR, setup_hint)
        return self._client

    # -- indexing ----------------------------------------------------------------------

    def index_layer(self) -> Optional[IndexDialog]:
        rasters = [layer for layer in QgsProject.instance().mapLayers().values()
                   if layer.type() == QgsMapLayerType.RasterLayer]
        if not rasters:
            self.messages.warning("No raster layer to index: add a raster (GeoTIFF, VRT…) to the project, "
                                  "select it, then click Index layer.", key="index")
            return None
        active = self.iface.activeLayer()
        layer = active if active in rasters else rasters[0]
        if self.index_dialog is not None:
            self.index_dialog.deleteLater()
        self.index_dialog = IndexDialog(read_settings(), layer, self.iface.mainWindow(), self.iface.mapCanvas())
        self.index_dialog.accepted.connect(self._index_dialog_accepted)
        self.environment_setup.attach_index_dialog(self.index_dialog)
        self.index_dialog.open()
        return self.index_dialog

    def _index_dialog_accepted(self) -> None:
        dialog = self.index_dialog
        chosen = dialog.settings
        if chosen.captioner == CAPTIONER_TEST:
            # The Test model is a one-off choice: the next Index dialog starts from the captioner the
            # user saved (Settings), not from placeholder captions. Tile size and the rest are kept.
            chosen = replace(chosen, captioner=read_settings().captioner)
        write_settings(chosen)
        requests = dialog.index_requests
        if len(requests) == 1 and requests[0].render is None:
            self.start_index(requests[0])
        elif self.queue.running:  # one queue at a time: its layers may share one index file
            self.messages.warning("TileScribe is already indexing layers (see the message above): wait for it, "
                                  "or Cancel it and run Index layer again.", key="index")
        else:  # several layers, or one to render first: one after another
            self.queue.start(requests)

    def start_index(self, request: IndexRequest) -> IndexTask:
        task = IndexTask(self.client(), request, lambda result: self._index_done(request, result))
        # One message per index file: this replaces an earlier run's "stopped" warning for good.
        self.messages.push(f"Indexing {request.layer_name} in the background: progress and Cancel are in "
                           "the task manager (bottom right).", key=index_key(request.db))
        return self.runner.start(task)

    def _project_cleared(self) -> None:
        """Project > Close or New: the index jobs still running or queued belong to the closed project."""
        running = [task.request for task in self.runner.tasks if isinstance(task, IndexTask)]
        self._closed_projects_jobs = running + list(self.queue.pending)
        self.queue.project_closed()

    def _index_done(self, request: IndexRequest, result: TaskResult) -> None:
        key = index_key(request.db)
        if result.error is not None:
            self.messages.error(f"Indexing {request.layer_name} stopped", result.error,
                                f"Tiles captioned so far are kept in {display_name(request.db)}: "
                                "run Index layer again with the same settings to resume.", key=key)
            return
        outcome = result.value
        if outcome.cancelled or outcome.failed:
            self.messages.warning(outcome.summary(), key=key)
        else:
            self.messages.success(outcome.summary(), key=key)
        # A job of a closed project does not bring its index into the new project's dock (seen: the
        # closed project's index listed in the new, empty project once the Index dialog's queue ended).
        if outcome.done and not any(request is job for job in self._closed_projects_jobs):
            where = display_name(request.db)
            why = (f"The {count(outcome.done, 'tile')} of {request.layer_name} captioned before the stop are kept "
                   f"in {where} and can be searched." if outcome.cancelled
                   else f"{request.layer_name} is indexed in {where}.")
            self.search.offer_index(request.db, why)
            self.dock.setUserVisible(True)

    # -- inspect -----------------------------------------------------------------------

    def activate_inspect(self, checked: bool = True) -> None:
        canvas = self.iface.mapCanvas()
        if checked:
            canvas.setMapTool(self.inspect_tool)
        elif canvas.mapTool() is self.inspect_tool:
            canvas.unsetMapTool(self.inspect_tool)

    def inspect_at(self, point, _button=None) -> Optional[TileAtTask]:
        """`point` lives in the map tool's mouse event: TileAtTask copies it before this returns."""
        canvas = self.iface.mapCanvas()
        # Every searched (ticked) index is read, the one whose raster layer is under the click first;
        # with none ticked, the active layer's.
        under = self.search.index_under(point, canvas.mapSettings().destinationCrs())
        dbs = list(dict.fromkeys([db for db in (under, *self.dock.selected_dbs()) if db]))
        if not dbs and index_path_beside(self.iface.activeLayer()):
            dbs = [index_path_beside(self.iface.activeLayer())]
        if not dbs:
            self.messages.warning("No index to inspect: index this raster (Index layer) or choose its "
                                  "index in the TileScribe dock.", key="inspect")
            return None
        task = TileAtTask(self.client(), dbs, self.dock.current_run(), point, canvas.mapSettings().destinationCrs(),
                          QgsProject.instance().transformContext(), self._tile_at_done)
        return self.runner.start(task)

    def _tile_at_done(self, result: TaskResult) -> None:
        if result.error is not None:
            self.messages.error("Cannot show the tile's captions", result.error, key="inspect")
            return
        found = result.value
        if found.record is None:
            where = (f"{display_name(found.db)} ({found.run.short()})" if len(found.searched) <= 1
                     else f"the {count(len(found.searched), 'searched index', 'searched indexes')}")
            self.messages.push(f"No indexed tile of {where} here: click inside an indexed raster.", key="inspect")
            return
        self.messages.dismiss("inspect")
        if self.captions_dialog is None:
            self.captions_dialog = CaptionsDialog(self.iface.mainWindow())
            self.captions_dialog.similarRequested.connect(self.search.similar)
        self.captions_dialog.show_tile(found.db, found.record, found.run.placeholder)
        crs = self.search.display_crs(found.run.crs(), found.run.raster)
        flash(self.iface.mapCanvas(), QgsRectangle(*found.record["bbox"]), crs)

    # -- settings ----------------------------------------------------------------------

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(read_settings(), self.iface.mainWindow())
        self.environment_setup.attach_settings_dialog(dialog)
        dialog.accepted.connect(lambda: write_settings(dialog.chosen_settings()))
        dialog.finished.connect(lambda _code: dialog.deleteLater())
        dialog.open()
        return dialog


def index_key(db: str) -> str:
    """The message-bar subject of an index file's jobs."""
    return f"index:{Path(db).resolve()}"
