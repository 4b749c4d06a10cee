"""The Index dialog's engine choice reaches the worker, and the outcome says which engine captioned."""

from __future__ import annotations

import pytest
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from tilescribe.plugin.qgis.index_dialog import IndexDialog
from tilescribe.plugin.qgis.indexing import IndexOutcome, captioner_settings
from tilescribe.plugin.qgis.settings import CAPTIONER_LOCAL, PluginSettings

pytestmark = pytest.mark.qgis


def test_engine_choice_and_slots_reach_the_captioner_settings(qgis_app, tiny_pair):
    settings = PluginSettings(captioner=CAPTIONER_LOCAL, model_path=str(tiny_pair[0]), mmproj_path=str(tiny_pair[1]))
    dialog = IndexDialog(settings)
    assert dialog.engineCombo.currentData() == "llama-cpp-python" and not dialog.slotsSpin.isEnabled()
    dialog.engineCombo.setCurrentIndex(dialog.engineCombo.findData("server"))
    assert dialog.slotsSpin.isEnabled()
    dialog.slotsSpin.clear()
    QTest.keyClicks(dialog.slotsSpin, "3")
    QTest.keyClick(dialog.slotsSpin, Qt.Key_Tab)
    chosen = captioner_settings(dialog.chosen_settings())
    assert (chosen.engine, chosen.slots) == ("server", 3)
    dialog.testRadio.setChecked(True)  # engine choice belongs to the local model only
    assert not dialog.engineCombo.isEnabled() and not dialog.slotsSpin.isEnabled()
    dialog.deleteLater()


def test_llama_server_is_offered_only_where_the_environment_has_one(qgis_app, tiny_pair, tmp_path):
    """The plugin's own setup may not build llama-server: then the dialog must not offer it."""
    from tilescribe.plugin.qgis.model_fields import SERVER_MISSING

    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    settings = PluginSettings(captioner=CAPTIONER_LOCAL, model_path=str(tiny_pair[0]), mmproj_path=str(tiny_pair[1]),
                              worker_python=str(python), engine="server")
    dialog = IndexDialog(settings)
    server = dialog.engineCombo.findData("server")
    assert not dialog.engineCombo.model().item(server).isEnabled()
    assert dialog.engineCombo.itemData(server, Qt.ToolTipRole) == SERVER_MISSING
    assert dialog.engineCombo.currentData() == "llama-cpp-python"  # a saved 'server' choice falls back
    dialog.deleteLater()
    (python.parent / "llama-server").write_text("")
    dialog = IndexDialog(settings)
    assert dialog.engineCombo.model().item(server).isEnabled() and dialog.engineCombo.currentData() == "server"
    dialog.deleteLater()


def test_the_outcome_names_the_engine_that_captioned():
    outcome = IndexOutcome("ortho", "/x/ortho.tilescribe.sqlite", 1, 4, 4, 0, 0, False, False, 4, [],
                           "llama-server (b1-0c1e570), 4 slots, CPU")
    assert "Captioned with llama-server (b1-0c1e570), 4 slots, CPU." in outcome.summary()
