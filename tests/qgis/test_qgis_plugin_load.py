"""Loading and unloading the plugin: what initGui adds, unload removes, and it loads again."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.qgis


def _state(fake_iface):
    """(docks, toolbars, actions) of TileScribe's in the main window."""
    from qgis.gui import QgsDockWidget
    from qgis.PyQt.QtCore import QCoreApplication, QEvent
    from qgis.PyQt.QtWidgets import QAction, QToolBar

    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # unload's deleteLater()s
    window = fake_iface.window
    docks = [d for d in window.findChildren(QgsDockWidget) if d.objectName() == "TileScribeDock"]
    toolbars = [t for t in window.findChildren(QToolBar) if t.objectName() == "TileScribeToolbar"]
    actions = [a for a in window.findChildren(QAction) if a.objectName().startswith("TileScribe")]
    return docks, toolbars, actions


def _menu_balance(fake_iface) -> int:
    added = fake_iface.mock.addPluginToRasterMenu.call_count
    return added - fake_iface.mock.removePluginRasterMenu.call_count


def test_init_gui_adds_actions_dock_and_toolbar(plugin, fake_iface):
    docks, toolbars, actions = _state(fake_iface)
    assert len(docks) == 1 and len(toolbars) == 1 and len(actions) == 3
    names = [action.text() for action in toolbars[0].actions()]
    assert names == ["Index layer…", "TileScribe search", "Inspect tile captions"]
    menu_items = [call.args[1].text() for call in fake_iface.mock.addPluginToRasterMenu.call_args_list]
    assert menu_items == names + ["Settings…"]
    assert not docks[0].isVisible()  # shown on demand, not forced on every QGIS start


def test_unload_removes_everything_and_loads_again(plugin, fake_iface):
    from qgis.core import QgsProject

    plugin.dock_action.trigger()  # the dock toggle shows the dock
    assert plugin.dock.isUserVisible()
    plugin.inspect_action.trigger()
    assert fake_iface.canvas.mapTool() is plugin.inspect_tool
    plugin.unload()
    assert _state(fake_iface) == ([], [], [])
    assert _menu_balance(fake_iface) == 0
    assert fake_iface.canvas.mapTool() is None
    assert not QgsProject.instance().mapLayers()

    import tilescribe

    again = tilescribe.classFactory(fake_iface.mock)
    again.initGui()
    docks, toolbars, actions = _state(fake_iface)
    assert len(docks) == 1 and len(toolbars) == 1 and len(actions) == 3
    again.unload()
    assert _state(fake_iface) == ([], [], []) and _menu_balance(fake_iface) == 0


def test_settings_round_trip(qgis_app):
    from qgis.core import QgsSettings

    from tilescribe.plugin.qgis.settings import PluginSettings, read_settings, write_settings

    assert read_settings() == PluginSettings()  # nothing stored: the defaults
    chosen = PluginSettings(worker_python="/opt/py/bin/python", captioner="server", model_path="/m/a.gguf",
                            mmproj_path="/m/p.gguf", server_url="http://gpu:8080/v1", server_model="qwen",
                            api_key_env="MY_KEY_VAR", tile_size=256, overlap=32, variants=3, k=25)
    write_settings(chosen)
    again = read_settings()
    assert again == chosen
    assert isinstance(again.tile_size, int) and isinstance(again.k, int)
    assert QgsSettings().value("tilescribe/api_key_env") == "MY_KEY_VAR"  # the name only, never a key


def test_settings_dialog_edits_and_keeps_values(plugin, qtbot):
    from tilescribe.plugin.qgis.settings import read_settings

    dialog = plugin.open_settings()
    dialog.pythonFile.setFilePath("/nowhere/python")
    dialog.kSpin.setValue(7)
    dialog.buttonBox.accepted.emit()
    assert read_settings().worker_python == "/nowhere/python"
    assert read_settings().k == 7
    assert read_settings().tile_size == 512  # untouched fields keep their values


def test_default_worker_python_is_the_checkout_venv():
    from tilescribe.plugin.qgis.settings import PLUGIN_DIR, PluginSettings

    assert PluginSettings().python() == PLUGIN_DIR / ".venv" / "bin" / "python"
    assert PluginSettings().python().is_file()  # `make setup` made it in this checkout


def test_inspect_action_toggles_the_map_tool(plugin, fake_iface):
    plugin.inspect_action.trigger()
    assert fake_iface.canvas.mapTool() is plugin.inspect_tool and plugin.inspect_action.isChecked()
    plugin.inspect_action.trigger()  # clicked again: the user is done inspecting
    assert fake_iface.canvas.mapTool() is None and not plugin.inspect_action.isChecked()


def test_a_message_pushed_without_a_key_keeps_its_text(plugin, fake_iface):
    """Seen in the real QGIS (`make gui-first-run`): "Setting up TileScribe's environment…" and
    "TileScribe is ready…" showed an empty bar. The message's body belonged to Python and went with
    the item's wrapper, which QGIS's own bar does not keep alive (this test's bar does): Qt owns it."""
    import gc

    from qgis.PyQt import sip
    from qgis.PyQt.QtWidgets import QLabel

    text = "Setting up TileScribe's environment in the background."
    item = plugin.messages.push(text)
    assert not sip.ispyowned(item.body)
    del item
    gc.collect()
    labels = [bar_item.findChild(QLabel, "tilescribeMessageText") for bar_item in fake_iface.bar.items()]
    assert text in [label.text() for label in labels if label is not None]


def test_qgis_defaults_are_the_cores():
    """The dock's and dialogs' defaults come from the core's settings objects (one owner each)."""
    from tilescribe.plugin.core.captioning.factory import DEFAULT_CAPTIONER
    from tilescribe.plugin.core.search.search import SearchRequest
    from tilescribe.plugin.qgis.settings import PluginSettings

    settings = PluginSettings()
    assert (settings.engine, settings.slots) == (DEFAULT_CAPTIONER.engine, DEFAULT_CAPTIONER.slots)
    assert settings.k == SearchRequest.k
