"""What the session scripts that run inside the real QGIS (`qgis --code`) share: waiting with the event
loop turning, screenshots of the whole screen, the report, QGIS's Python errors, and quitting QGIS
with a watchdog on any question it asks. Imported by scripts/gui_smoke_session.py and
scripts/gui_first_run_session.py (scripts/gui_smoke.py puts this folder on sys.path for them).
"""

import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QPoint, QTimer
from qgis.PyQt.QtWidgets import QApplication, QLabel, QStyle, QStyleOptionComboBox
from qgis.utils import iface

OUT = Path(os.environ["GUI_SMOKE_OUT"])
REPORT = {"steps": [], "python_errors": [], "messages": [], "screenshots": []}
# The longest time one turn of the event loop took while we waited: what a user feels as a freeze.
STALL = {"longest_s": 0.0}


def log_message(message, tag, level):
    if tag.startswith("Python"):
        REPORT["python_errors"].append(f"[{tag}] {message}")
    elif tag == "TileScribe":
        REPORT["messages"].append(message)


def record_bar_item(_widget):
    """Every notice QGIS itself puts on the bar (ours have no title), to see which were taken off."""
    for item in iface.messageBar().items():
        if item.title():
            notice = f"{item.title()}: {item.text()}"
            if notice not in REPORT.setdefault("qgis_notices", []):
                REPORT["qgis_notices"].append(notice)


QgsApplication.messageLog().messageReceived.connect(log_message)
iface.messageBar().widgetAdded.connect(record_bar_item)


def wait(condition, timeout_s=120.0, what="the plugin", every=None):
    """Turn the event loop until `condition()`; `every()` (if given) runs once per turn."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s:.0f} s")
        began = time.monotonic()
        QApplication.processEvents()
        STALL["longest_s"] = max(STALL["longest_s"], round(time.monotonic() - began, 3))
        if every is not None:
            every()
        time.sleep(0.01)


def settle(seconds=0.3):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def rendered():
    """Until the canvas has drawn what it shows now: one fresh render, started and finished."""
    canvas = iface.mapCanvas()
    done = []
    count = lambda: done.append(1)  # noqa: E731
    canvas.mapCanvasRefreshed.connect(count)
    canvas.refresh()
    wait(lambda: done and not canvas.isDrawing(), 60, "the map canvas")
    canvas.mapCanvasRefreshed.disconnect(count)
    settle(0.2)


def maximise():
    """Xvfb has no window manager: the main window gets the whole screen by hand."""
    iface.mainWindow().setGeometry(QApplication.primaryScreen().availableGeometry())
    settle(0.3)


def shoot(name):
    path = OUT / f"{len(REPORT['screenshots']) + 1:02d}_{name}.png"
    QApplication.primaryScreen().grabWindow(0).save(str(path))
    REPORT["screenshots"].append(path.name)


def step(name, **facts):
    REPORT["steps"].append({"step": name, **facts})
    shoot(name)


def bar_texts():
    texts = []
    for item in iface.messageBar().items():
        label = item.findChild(QLabel, "tilescribeMessageText")
        texts.append(label.text() if label is not None else f"{item.title()}: {item.text()}")
    return texts


def qgis_task_notices(texts):
    """QGIS's own "Task complete"/"Task failed" notices still on the bar (the plugin removes them)."""
    return [text for text in texts if text.startswith(("Task complete", "Task failed"))]


def pixel_of(point):
    pixel = iface.mapCanvas().getCoordinateTransform().transform(point)
    return QPoint(round(pixel.x()), round(pixel.y()))


def toolbar_button(plugin, action):
    """The plugin toolbar's button for `action`: what a user clicks."""
    toolbar = iface.mainWindow().findChild(type(plugin.toolbar), "TileScribeToolbar")
    return toolbar.widgetForAction(action)


def idle(plugin, timeout_s=180.0):
    wait(lambda: not plugin.runner.tasks, timeout_s, "the plugin's tasks")


def on_screen(widget):
    """The widget's frame lies inside the screen, and it is the window on top (what a user sees)."""
    frame = widget.frameGeometry()
    screen = QApplication.primaryScreen().geometry()
    return screen.contains(frame) and QApplication.topLevelAt(frame.center()) is widget.window()


def combo_text_fits(combo):
    """The combo box shows its whole current text (Qt cuts it, with no ellipsis, where it is wider)."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(QStyle.CC_ComboBox, option, QStyle.SC_ComboBoxEditField, combo)
    return combo.fontMetrics().horizontalAdvance(combo.currentText()) <= field.width()


def quit_qgis():
    """Quit QGIS as a user does: it must ask nothing (no 'save the scratch layer?')."""
    from qgis.core import QgsProject

    REPORT["dirty_before_quit"] = QgsProject.instance().isDirty()
    finish(ok=True)
    QTimer.singleShot(4000, prompt_watchdog)
    iface.actionExit().trigger()


def prompt_watchdog():
    """Still running 4 s after Quit: a dialog asks something. Record it, answer it, fail."""
    modal = QApplication.activeModalWidget()
    text = " ".join(label.text() for label in modal.findChildren(QLabel) if label.text()) if modal else ""
    REPORT["quit_prompt"] = f"{modal.windowTitle() if modal else '?'}: {text}"
    shoot("quit_prompt")
    finish(ok=False)
    os._exit(3)


def finish(ok):
    REPORT["ok"] = ok and not REPORT["python_errors"]
    REPORT["longest_event_loop_turn_s"] = STALL["longest_s"]
    (OUT / "report.json").write_text(json.dumps(REPORT, indent=2, ensure_ascii=False))


def run_session(steps, cleanup=None):
    """Run `steps()` once the main window is up; on any failure: a screenshot, `cleanup()` (stop
    what the session started, e.g. a pip run), the report, and QGIS ends with status 2."""
    def run():
        try:
            steps()
        except Exception:
            REPORT["failure"] = traceback.format_exc()
            shoot("failure")
            if cleanup is not None:
                try:
                    cleanup()
                except Exception:
                    REPORT["cleanup_failure"] = traceback.format_exc()
            finish(ok=False)
            os._exit(2)

    QTimer.singleShot(500, run)
