"""A PostgreSQL index in QGIS through a saved QGIS PostgreSQL connection (plugin/qgis/postgres_connections.py).

Real parts: headless QGIS with real Qt events, the throwaway PostgreSQL cluster (tests/fixtures_postgres.py)
holding a copy of the captioned NEON index, a role that logs in only with its password (scram-sha-256 in
pg_hba.conf), that password in a real QGIS authentication configuration (a temp auth database:
tests/qgis/conftest.py), the real worker and embedder. The password must reach the worker's connection and
nothing else: not the project file, not our settings, not the worker's environment or messages.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gui_events import search_by_typing, wait_idle

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

PASSWORD = "pw 'with' \\odd/ chars@#"
ROLE = "ts_qgis_reader"
CONNECTION = "team db"


@pytest.fixture(scope="module")
def team_index(pg_cluster, captioned_index):
    """The captioned NEON index copied into schema "team"; ROLE may read it with PASSWORD only."""
    import psycopg

    from tilescribe.plugin.core.index.copying import copy_index
    from tilescribe.plugin.core.index.opening import open_index

    database = pg_cluster.create_database("qgisteam")
    with open_index(captioned_index.with_name("neon.tilescribe.sqlite"), readonly=True) as src, \
            open_index(pg_cluster.url(database, schema="team"), create=True) as dst:
        copy_index(src, dst)
    hba = pg_cluster.data / "pg_hba.conf"  # first match wins: this role needs its password, the rest trust
    hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
    with psycopg.connect(host=str(pg_cluster.folder), port=pg_cluster.port, user="postgres", dbname=database,
                         autocommit=True) as conn:
        conn.execute(f"create role {ROLE} login password %s".replace("%s", "'" + PASSWORD.replace("'", "''") + "'"))
        conn.execute(f"grant usage on schema team to {ROLE}")
        conn.execute(f"grant select on all tables in schema team to {ROLE}")
        conn.execute("select pg_reload_conf()")
    return pg_cluster, database


@pytest.fixture
def saved_connection(team_index):
    """A saved QGIS connection to the team database whose credentials are in a QGIS auth configuration."""
    from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsSettings

    cluster, database = team_index
    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("test master", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("team reader")
    config.setConfig("username", ROLE)
    config.setConfig("password", PASSWORD)
    assert manager.storeAuthenticationConfig(config)[0]
    settings = QgsSettings()
    key = f"PostgreSQL/connections/{CONNECTION}/"
    for name, value in {"host": str(cluster.folder), "port": str(cluster.port), "database": database,
                        "service": "", "username": "", "password": "", "authcfg": config.id(),
                        "saveUsername": "false", "savePassword": "false"}.items():
        settings.setValue(key + name, value)
    yield config.id()
    settings.remove(f"PostgreSQL/connections/{CONNECTION}")
    manager.removeAuthenticationConfig(config.id())


def test_the_password_free_form_is_the_workers_label_and_the_request_gets_the_password(saved_connection):
    from tilescribe.plugin.core.index.target import parse_target
    from tilescribe.plugin.qgis import postgres_connections as pc

    db = pc.index_db(CONNECTION, "team")
    assert PASSWORD not in db and f"{ROLE}@" in db and "schema=team" in db
    assert parse_target(db).label == db  # hits and runs come back named as the dock lists the index
    sent = pc.with_password({"cmd": "search", "dbs": ["/a/b.tilescribe.sqlite", db], "db": db})
    assert sent["dbs"][0] == "/a/b.tilescribe.sqlite"
    for given in (sent["db"], sent["dbs"][1]):
        target = parse_target(given)
        assert target.password == PASSWORD and target.label == db and target.schema == "team"


def test_the_dock_adds_a_saved_connection_and_searches_it_with_the_auth_managers_password(
        plugin_on_shared_worker, saved_connection, captioned_index, add_raster, qtbot, tmp_path):
    from qgis.core import QgsProject, QgsSettings
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    plugin = plugin_on_shared_worker
    dock = plugin.dock
    add_raster(captioned_index)  # the file index beside the raster is listed too
    file_db = str(captioned_index.with_name("neon.tilescribe.sqlite").resolve())
    wait_idle(plugin, qtbot)

    qtbot.mouseClick(dock.openPostgresButton, Qt.LeftButton)
    dialog = dock.postgres_dialog
    qtbot.waitUntil(dialog.isVisible)
    assert CONNECTION in [dialog.connectionCombo.itemText(i) for i in range(dialog.connectionCombo.count())]
    dialog.connectionCombo.setCurrentIndex(dialog.connectionCombo.findText(CONNECTION))
    qtbot.mouseClick(dialog.schemaEdit, Qt.LeftButton)
    dialog.schemaEdit.selectAll()
    qtbot.keyClicks(dialog.schemaEdit, "team")
    qtbot.mouseClick(dialog.buttonBox.button(QDialogButtonBox.Ok), Qt.LeftButton)

    listed = dock._listed()
    (pg_db,) = [db for db in listed if db != file_db]
    assert listed[pg_db] == f"team on {CONNECTION} (PostgreSQL)" and PASSWORD not in pg_db
    assert dock.selected_dbs() == [file_db, pg_db]  # both ticked: one merged ranking

    hits = search_by_typing(plugin, qtbot, "a dirt road through the forest")
    assert dock.statusLabel.text() and "error" not in dock.statusLabel.text().lower(), dock.statusLabel.text()
    assert {hit.index for hit in hits} == {file_db, pg_db}  # the same tiles from the file and from PostgreSQL
    assert hits[0].tile_id == hits[1].tile_id == "0_200_200x200"

    dock.select_db(pg_db)  # the PostgreSQL index alone: its runs, then a search of it
    wait_idle(plugin, qtbot)
    assert [run.id for run in dock.runs] == [1]
    hits = search_by_typing(plugin, qtbot, "dark water of a pond")
    assert hits and hits[0].tile_id == "200_200_200x200", dock.statusLabel.text()

    # The project keeps the connection's name and the schema; no password, host or user anywhere of ours.
    project_file = tmp_path / "team.qgs"
    assert QgsProject.instance().write(str(project_file))
    xml = project_file.read_text(encoding="utf-8")
    assert CONNECTION in xml and '"schema": "team"' in xml.replace("&quot;", '"')
    assert PASSWORD not in xml and PASSWORD.replace("'", "&apos;") not in xml and ROLE not in xml
    ours = QgsSettings()
    ours.beginGroup("tilescribe")
    assert not any(PASSWORD in str(ours.value(key)) for key in ours.allKeys())
    ours.endGroup()
    pid = plugin._client.pid
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")
    assert PASSWORD not in environ and "PGPASSWORD" not in environ.split("\0")[0]
    assert PASSWORD not in plugin._client._process.last_messages()

    # The project read again lists the index from its entry (the connection resolved anew).
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(project_file))
    wait_idle(plugin, qtbot)
    assert pg_db in dock._listed()


def test_a_wrong_password_in_the_auth_manager_is_an_error_naming_no_password(
        plugin_on_shared_worker, saved_connection, qtbot):
    from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProject

    from tilescribe.plugin.qgis import postgres_connections as pc

    config = QgsAuthMethodConfig()
    QgsApplication.authManager().loadAuthenticationConfig(saved_connection, config, True)
    config.setConfig("password", "not-the-password")
    assert QgsApplication.authManager().updateAuthenticationConfig(config)
    plugin = plugin_on_shared_worker
    source = pc.add_to_project(QgsProject.instance(), CONNECTION, "team")
    plugin.search.refresh_indexes()
    plugin.dock.select_db(source.db)  # reading its runs fails
    wait_idle(plugin, qtbot)
    status = plugin.dock.statusLabel.text()
    assert "password authentication failed" in status and ROLE in status, status
    assert "not-the-password" not in status and PASSWORD not in status


def test_the_index_dialog_targets_a_saved_connection(saved_connection, captioned_index, add_raster, qgis_app):
    from qgis.core import QgsProject

    from tilescribe.plugin.core.index.target import parse_target
    from tilescribe.plugin.qgis import postgres_connections as pc
    from tilescribe.plugin.qgis.index_dialog import IndexDialog
    from tilescribe.plugin.qgis.settings import CAPTIONER_TEST, PluginSettings

    layer = add_raster(captioned_index)
    dialog = IndexDialog(PluginSettings(captioner=CAPTIONER_TEST), layer)
    assert dialog.build_request().db.endswith("neon.tilescribe.sqlite")  # the file stays the default
    combo = dialog.postgresTarget.targetCombo
    assert not dialog.postgresTarget.schemaEdit.isEnabled()
    combo.setCurrentIndex(combo.findData(CONNECTION))
    assert dialog.postgresTarget.schemaEdit.isEnabled()
    dialog.postgresTarget.schemaEdit.setText("ortho2024")
    request = dialog.build_request()
    assert request.db == pc.index_db(CONNECTION, "ortho2024") and PASSWORD not in request.db
    assert parse_target(request.db).schema == "ortho2024"
    assert (CONNECTION, "ortho2024") in pc.project_entries(QgsProject.instance())  # listed in the dock next
    sent = pc.with_password(request.worker_args())  # as the index task sends it
    assert parse_target(sent["db"]).password == PASSWORD
    dialog.deleteLater()
    assert os.environ.get("PGPASSWORD") != PASSWORD


@pytest.fixture
def writer_connection(team_index):
    """A saved connection as the cluster's superuser (trust: no password at all), for indexing."""
    from qgis.core import QgsSettings

    cluster, database = team_index
    key = "PostgreSQL/connections/team writer/"
    settings = QgsSettings()
    for name, value in {"host": str(cluster.folder), "port": str(cluster.port), "database": database,
                        "username": "postgres", "saveUsername": "true", "authcfg": ""}.items():
        settings.setValue(key + name, value)
    yield "team writer"
    settings.remove("PostgreSQL/connections/team writer")


def test_index_layer_into_a_saved_connection_then_search_it(plugin, writer_connection, neon_raster, add_raster,
                                                            fake_iface, qtbot, wait_task, team_index):
    import psycopg
    from qgis.core import Qgis
    from gui_events import newest_task

    from tilescribe.plugin.qgis import postgres_connections as pc

    cluster, database = team_index
    add_raster(neon_raster)
    plugin.index_action.trigger()
    dialog = plugin.index_dialog
    dialog.testRadio.setChecked(True)
    dialog.tileSizeSpin.setValue(200)
    dialog.variantsSpin.setValue(1)
    combo = dialog.postgresTarget.targetCombo
    combo.setCurrentIndex(combo.findData(writer_connection))
    dialog.postgresTarget.schemaEdit.setText("fresh")
    dialog.buttonBox.button(dialog.buttonBox.Ok).click()
    result = wait_task(newest_task(plugin), 240)
    assert result.error is None, result.error
    level, text = fake_iface.messages()[-1]
    assert level == Qgis.Success and "4 of 4 tiles captioned" in text, text
    assert "in fresh on team writer (PostgreSQL)" in text
    with psycopg.connect(host=str(cluster.folder), port=cluster.port, user="postgres", dbname=database) as conn:
        assert conn.execute("select status, count(*) from fresh.tiles group by status").fetchall() == [("done", 4)]

    db = pc.index_db(writer_connection, "fresh")
    assert db in plugin.dock._listed() and db in plugin.dock.selected_dbs()  # listed and searched along
    plugin.dock.select_db(db)
    hits = search_by_typing(plugin, qtbot, "trees")
    assert len(hits) == 4 and all(hit.raster.endswith("neon.tif") for hit in hits), plugin.dock.statusLabel.text()
