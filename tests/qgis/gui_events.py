"""Real Qt events on real widgets, and what the user then sees (canvas pixels, list rows)."""

from __future__ import annotations

import time


def newest_task(plugin):
    """The task the plugin started last (index selection also starts a quick task reading the runs)."""
    assert plugin.runner.tasks, "no task was started"
    return list(plugin.runner.tasks)[-1]


def wait_idle(plugin, qtbot, timeout_s: float = 120.0) -> None:
    """Until every task the plugin started has handed its result to the GUI."""
    qtbot.waitUntil(lambda: not plugin.runner.tasks, timeout=int(timeout_s * 1000))


def search_by_typing(plugin, qtbot, query: str, timeout_s: float = 90.0):
    """What a user does: click the query box, type, press Enter; returns the listed hits."""
    from qgis.PyQt.QtCore import Qt

    wait_idle(plugin, qtbot, timeout_s)  # the runs of the chosen index are read first
    edit = plugin.dock.queryEdit
    qtbot.mouseClick(edit, Qt.LeftButton)
    edit.clear()
    qtbot.keyClicks(edit, query)
    qtbot.keyClick(edit, Qt.Key_Return)
    assert plugin.runner.tasks, f"Enter started no search: {plugin.dock.statusLabel.text()}"
    wait_idle(plugin, qtbot, timeout_s)
    return plugin.dock.hits


def map_pixel(canvas, point):
    """The canvas widget pixel that shows the map point `point` (canvas CRS)."""
    from qgis.PyQt.QtCore import QPoint

    pixel = canvas.getCoordinateTransform().transform(point)
    return QPoint(round(pixel.x()), round(pixel.y()))


def click_canvas(qtbot, canvas, point) -> None:
    """Press and release the left button over `point`: the map tool receives a real QgsMapMouseEvent."""
    from qgis.PyQt.QtCore import Qt

    pixel = map_pixel(canvas, point)
    qtbot.mousePress(canvas.viewport(), Qt.LeftButton, pos=pixel)
    qtbot.mouseRelease(canvas.viewport(), Qt.LeftButton, pos=pixel)


def render_canvas(app, canvas, timeout_s: float = 30.0):
    """The canvas as the user sees it after its pending redraw: a QImage of its viewport."""
    deadline = time.monotonic() + timeout_s
    for _ in range(5):  # a refresh is scheduled by a timer, then renders in threads
        app.processEvents()
        time.sleep(0.02)
    while canvas.isDrawing() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(5):
        app.processEvents()
    return canvas.viewport().grab().toImage()


def orange_pixels_on_outline(image, canvas, rect) -> int:
    """How many pixels along a rectangle's outline (map units, canvas CRS) are the highlight's orange."""
    from qgis.core import QgsPointXY

    corners = [QgsPointXY(rect.xMinimum(), rect.yMinimum()), QgsPointXY(rect.xMaximum(), rect.yMaximum())]
    (x0, y1), (x1, y0) = [(p.x(), p.y()) for p in (map_pixel(canvas, c) for c in corners)]
    count = 0
    for x in range(min(x0, x1), max(x0, x1) + 1, 2):
        for y in (y0, y1):
            count += _is_outline_orange(image, x, y)
    for y in range(min(y0, y1), max(y0, y1) + 1, 2):
        for x in (x0, x1):
            count += _is_outline_orange(image, x, y)
    return count


def _is_outline_orange(image, x: int, y: int) -> int:
    """Outline colour 255,70,0 (highlight.py), checked within a pixel of (x, y)."""
    from qgis.PyQt.QtGui import QColor

    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            px, py = x + dx, y + dy
            if 0 <= px < image.width() and 0 <= py < image.height():
                colour = QColor(image.pixel(px, py))
                if colour.red() > 200 and colour.green() < 130 and colour.blue() < 80:
                    return 1
    return 0


def bar_texts(bar) -> list[str]:
    """The texts a message bar shows now, whole (the plugin's wrapped label, or the item's text)."""
    from qgis.PyQt.QtWidgets import QLabel

    texts = []
    for item in bar.items():
        label = item.findChild(QLabel, "tilescribeMessageText")
        texts.append(label.text() if label is not None else f"{item.title()}: {item.text()}")
    return texts
