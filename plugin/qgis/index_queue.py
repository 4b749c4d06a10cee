"""Several layers indexed one after another: a web layer is rendered first, then each is indexed.

One task at a time (one indexer per index file, and the models load once in the worker): the task
manager shows each task's own progress; one message on the bar shows the whole queue ("layer 2 of
4", an overall bar, Cancel). Cancel stops the task in progress and the queue; what is indexed stays
indexed, and Resume runs the rest (the stopped layer continues where its run stopped).
Closing the project ends the queue: the layer in progress finishes (as a single layer's run
does), the layers still queued belong to the closed project and are not started.
"""

from __future__ import annotations

from typing import Callable, Optional

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QProgressBar

from ..core.errors import TileScribeError
from .indexing import IndexRequest
from .tasks import IndexTask, TaskResult, TaskRunner
from .web_render import RenderTask
from .wording import count

KEY = "index-queue"


class IndexQueue:
    """`on_indexed(request, result)` gets each layer's outcome (the plugin's usual messages and offer)."""

    def __init__(self, runner: TaskRunner, client: Callable, messages,
                 on_indexed: Callable[[IndexRequest, TaskResult], None]):
        self.runner, self.client, self.messages, self.on_indexed = runner, client, messages, on_indexed
        self.pending: list[IndexRequest] = []
        self.finished: list[IndexRequest] = []
        self.total = 0
        self.task = None  # the task running now
        self.stopping = False
        self.project_gone = False  # the project was closed: no further layer starts
        self.progress: Optional[QProgressBar] = None

    @property
    def running(self) -> bool:
        return self.task is not None

    def start(self, requests: list[IndexRequest]) -> None:
        self.pending, self.finished, self.total = list(requests), [], len(requests)
        self.stopping = self.project_gone = False
        self._next()

    def resume(self) -> None:
        """Runs what a Cancel or an error left (the stopped layer first)."""
        if not self.running and self.pending:
            self.stopping = False
            self._next()

    def cancel(self) -> None:
        self.stopping = True
        if self.task is not None:
            self.task.cancel()

    def project_closed(self) -> None:
        """Project > Close or New. A Resume left on the bar would index the closed project's layers
        into the next project's session: it goes; a running queue stops after its current layer."""
        if self.running:
            self.project_gone = True
        elif self.pending:
            self.pending = []
            self.messages.dismiss(KEY)

    # -- one layer after another ---------------------------------------------------------

    def _next(self) -> None:
        if not self.pending:
            self._done()
            return
        request = self.pending[0]
        if request.render is not None and not request.render.rendered():
            try:
                task = RenderTask(request.render, lambda result: self._rendered(request, result))
            except TileScribeError as exc:  # the layer was removed, Processing is off
                self.on_indexed(request, TaskResult(error=exc))
                self._stopped()
                return
            self._start(task, "rendering")
        else:
            self._index(request)

    def _index(self, request: IndexRequest) -> None:
        self._start(IndexTask(self.client(), request, lambda result: self._indexed(request, result)), "indexing")

    def _start(self, task, doing: str) -> None:
        self.task = task
        request = self.pending[0]
        self._show(f"{doing.capitalize()} {request.layer_name}: layer {len(self.finished) + 1} of {self.total}.")
        task.progressChanged.connect(self._progress)
        self.runner.start(task)

    def _rendered(self, request: IndexRequest, result: TaskResult) -> None:
        self.task = None
        if result.error is not None:
            self.on_indexed(request, result)  # the plugin says what stopped it
        if result.error is not None or result.cancelled or self.stopping:
            self._stopped()  # nothing rendered is kept half-way: Resume renders it again
            return
        if self.project_gone:
            self._closed()
            return
        self._index(request)

    def _indexed(self, request: IndexRequest, result: TaskResult) -> None:
        self.task = None
        self.on_indexed(request, result)
        outcome = result.value
        if result.error is not None or (outcome is not None and outcome.cancelled) or self.stopping:
            self._stopped()
            return
        self.finished.append(self.pending.pop(0))
        if self.project_gone and self.pending:
            self._closed()
            return
        self._next()

    # -- what the bar shows ---------------------------------------------------------------

    def _progress(self, value: float) -> None:
        if self.progress is None:
            return
        try:
            self.progress.setValue(int(100 * (len(self.finished) + value / 100.0) / max(1, self.total)))
        except RuntimeError:  # the message was closed by the user
            self.progress = None

    def _show(self, text: str) -> None:
        item = self.messages.push(text, Qgis.Info, duration=0, key=KEY)
        self.progress = QProgressBar(item.body)
        self.progress.setObjectName("tilescribeQueueProgress")
        self.progress.setMaximumWidth(180)
        self.progress.setValue(int(100 * len(self.finished) / max(1, self.total)))
        item.body.layout().addWidget(self.progress)
        item.body.add_button("Cancel", self.cancel).setObjectName("tilescribeQueueCancel")

    def _stopped(self) -> None:
        if self.project_gone:  # no Resume: its layers belong to the closed project
            self._closed()
            return
        self.progress = None
        done = ", ".join(r.layer_name for r in self.finished) or "none"
        item = self.messages.push(
            f"Indexing stopped: {len(self.finished)} of {count(self.total, 'layer')} indexed ({done}); "
            f"{len(self.pending)} left. What is indexed stays indexed.", Qgis.Warning, duration=0, key=KEY)
        item.body.add_button("Resume", self.resume).setObjectName("tilescribeQueueResume")

    def _closed(self) -> None:
        self.progress = None
        done = ", ".join(r.layer_name for r in self.finished) or "none"
        left = ", ".join(r.layer_name for r in self.pending)
        self.messages.push(
            f"The project was closed while its layers were indexed: {len(self.finished)} of "
            f"{count(self.total, 'layer')} indexed ({done}); left: {left}. What is indexed stays "
            "indexed: open that project and run Index layer to index the rest.", Qgis.Warning, duration=0, key=KEY)
        self.pending = []

    def _done(self) -> None:
        self.progress = None
        if self.total >= 2:
            dbs = sorted({r.db for r in self.finished})
            where = dbs[0] if len(dbs) == 1 else f"{len(dbs)} index files"
            self.messages.push(f"Indexed {count(self.total, 'layer')} into {where}.", Qgis.Success, key=KEY)
        else:  # one layer: the plugin's own message says how it went
            self.messages.dismiss(KEY)
