"""PostgreSQL indexes in QGIS: a saved QGIS PostgreSQL connection plus a schema names one.

What is stored where:
- the project (entry TileScribe/postgres_indexes): the connection's NAME and the schema, nothing else;
- host, port, database, service, sslmode and user: QGIS's saved connection (QSettings
  PostgreSQL/connections/<name>, read through the postgres provider), read each time;
- the password: QGIS's authentication manager (the connection's authcfg), or the connection
  itself where the user let QGIS save it there. We never write it anywhere.

The password reaches the worker in the request, in memory: `with_password` adds it to the "db"
/ "dbs" fields just before the request line is written to the worker's stdin pipe
(worker/client.py REQUEST_HOOKS). Not through the worker's environment (PGPASSWORD): one
worker serves every index of the session, so one variable could not hold two connections'
passwords, and a password changed in the auth manager would need the worker restarted. Inside
the worker the password lives in the connection string only: every message, hit and log names
the index by its label (core/index/target.py), which drops it, and server errors are scrubbed.
Everything the dock and the project hold is the password-free form built here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote, urlencode

from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsDataSourceUri, QgsProject, QgsProviderRegistry
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLineEdit,
                                 QToolButton, QWidget)

from ..core.errors import TileScribeError
from ..worker import client as worker_client
from .dock import IndexSource

PROJECT_SCOPE = "TileScribe"
PROJECT_KEY = "postgres_indexes"
DEFAULT_SCHEMA = "tilescribe"  # as core/index/target.py's default (the QGIS side may not import it)
FILE_TARGET = "An index file (below)"


@dataclass(frozen=True)
class PgConnection:
    """A saved QGIS PostgreSQL connection, as its URI says (no password kept)."""

    name: str
    host: str
    port: str
    database: str
    service: str
    username: str
    sslmode: str
    authcfg: str


# db (the password-free form) -> (connection name, schema): what `with_password` resolves at send time.
_SOURCES: dict[str, tuple[str, str]] = {}


def saved_connections() -> list[str]:
    """The names of QGIS's saved PostgreSQL connections, sorted."""
    metadata = QgsProviderRegistry.instance().providerMetadata("postgres")
    return sorted(metadata.connections(False)) if metadata is not None else []


def connection(name: str) -> PgConnection:
    metadata = QgsProviderRegistry.instance().providerMetadata("postgres")
    found = metadata.connections(False).get(name) if metadata is not None else None
    if found is None:
        raise TileScribeError(
            f"QGIS has no saved PostgreSQL connection named {name!r}: add it again in the Browser "
            "(PostgreSQL > New Connection…) or in Data Source Manager, with the same name.")
    uri = QgsDataSourceUri(found.uri())
    sslmode = QgsDataSourceUri.encodeSslMode(uri.sslMode()) if uri.sslMode() != QgsDataSourceUri.SslPrefer else ""
    return PgConnection(name, uri.host(), uri.port(), uri.database(), uri.service(), uri.username(), sslmode,
                        uri.authConfigId())


def credentials(conn: PgConnection) -> tuple[str, str]:
    """(user, password) for the connection: from its auth configuration, else as QGIS saved them."""
    if conn.authcfg:
        config = QgsAuthMethodConfig()
        manager = QgsApplication.authManager()
        loaded = manager.loadAuthenticationConfig(conn.authcfg, config, True)
        ok = loaded[0] if isinstance(loaded, tuple) else loaded
        if not ok:
            raise TileScribeError(
                f"The PostgreSQL connection {conn.name!r} uses QGIS authentication configuration {conn.authcfg!r}, "
                "which QGIS could not load (unknown id, or the master password was not given): check it in "
                "Settings > Options > Authentication, then search again.")
        return config.config("username") or conn.username, config.config("password")
    metadata = QgsProviderRegistry.instance().providerMetadata("postgres")
    uri = QgsDataSourceUri(metadata.connections(False)[conn.name].uri())
    return conn.username or uri.username(), uri.password()


def index_db(name: str, schema: str) -> str:
    """The password-free `--db` of the index in `schema` through the saved connection `name` (the
    form the worker names it by, so hits and runs match the dock's entry), registered for sending."""
    conn = connection(name)
    user = credentials(conn)[0] if conn.authcfg else conn.username
    schema = schema.strip() or DEFAULT_SCHEMA
    if conn.service:
        words = [("service", conn.service), ("user", user), ("dbname", conn.database), ("host", conn.host),
                 ("port", conn.port), ("sslmode", conn.sslmode)]
        db = " ".join(f"{k}={_keyword_value(v)}" for k, v in [*words, ("schema", schema)] if v)
    else:
        socket = conn.host.startswith("/")  # a unix socket folder goes in the query (no URL host)
        netloc = (quote(user, safe="") + "@" if user else "") + ("" if socket or not conn.host else conn.host) + (
            f":{conn.port}" if conn.port and not socket and conn.host else "")
        query = [("host", conn.host)] if socket else []
        query += [("port", conn.port)] if conn.port and (socket or not conn.host) else []
        query += [("sslmode", conn.sslmode)] if conn.sslmode else []
        query.append(("schema", schema))
        db = f"postgresql://{netloc}/{quote(conn.database, safe='')}?{urlencode(query, safe='/')}"
    _SOURCES[db] = (name, schema)
    return db


def label(name: str, schema: str) -> str:
    return f"{schema} on {name} (PostgreSQL)"


def with_password(args: dict) -> dict:
    """The request with the saved connection's password added to "db" and "dbs" (REQUEST_HOOKS)."""
    if not _SOURCES:
        return args
    out = dict(args)
    if isinstance(out.get("db"), str) and out["db"] in _SOURCES:
        out["db"] = _secret_form(out["db"])
    if isinstance(out.get("dbs"), list):
        out["dbs"] = [_secret_form(db) if isinstance(db, str) and db in _SOURCES else db for db in out["dbs"]]
    return out


def _secret_form(db: str) -> str:
    name, _schema = _SOURCES[db]
    user, password = credentials(connection(name))
    if not password:
        return db  # .pgpass, a service file or trust: libpq finds it itself
    if db.startswith("postgresql://"):
        rest = db[len("postgresql://"):]
        netloc, _, path = rest.partition("/")
        host = netloc.rsplit("@", 1)[-1]
        return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}/{path}"
    return f"{db} password={_keyword_value(password, always=True)}"


def _keyword_value(value: str, always: bool = False) -> str:
    if not always and value and not any(c in value for c in " '\\="):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


worker_client.REQUEST_HOOKS.append(with_password)


# -- the project: connection names and schemas only --------------------------------------


def project_entries(project: QgsProject) -> list[tuple[str, str]]:
    text, _ok = project.readEntry(PROJECT_SCOPE, PROJECT_KEY, "[]")
    try:
        return [(str(e["connection"]), str(e["schema"])) for e in json.loads(text or "[]")]
    except (ValueError, TypeError, KeyError):
        return []


def add_to_project(project: QgsProject, name: str, schema: str) -> IndexSource:
    schema = schema.strip() or DEFAULT_SCHEMA
    source = IndexSource(index_db(name, schema), label(name, schema))
    entries = project_entries(project)
    if (name, schema) not in entries:
        entries.append((name, schema))
        project.writeEntry(PROJECT_SCOPE, PROJECT_KEY,
                           json.dumps([{"connection": n, "schema": s} for n, s in entries]))
    return source


def indexes_in_project(project: QgsProject) -> list[IndexSource]:
    """The project's PostgreSQL indexes whose saved connection QGIS still has."""
    found = []
    for name, schema in project_entries(project):
        try:
            found.append(IndexSource(index_db(name, schema), label(name, schema)))
        except TileScribeError:
            continue  # the connection was deleted in QGIS: the entry waits for it to come back
    return found


def is_postgres(db: str) -> bool:
    """Whether the dock's entry `db` is a PostgreSQL index added here (not a file path)."""
    return db in _SOURCES


def display_name(db: str) -> str:
    """How messages name an index: "schema on connection (PostgreSQL)", or the file's name."""
    return label(*_SOURCES[db]) if db in _SOURCES else Path(db).name


# -- the dock: "PostgreSQL…" beside "Open…" ------------------------------------------------


class AddPostgresIndexDialog(QDialog):
    """Pick a saved connection and a schema."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Add a PostgreSQL index")
        form = QFormLayout(self)
        self.connectionCombo = QComboBox(self)
        self.connectionCombo.addItems(saved_connections())
        self.connectionCombo.setToolTip("QGIS's saved PostgreSQL connections (Browser > PostgreSQL); the "
                                        "password comes from QGIS's authentication manager")
        self.schemaEdit = QLineEdit(DEFAULT_SCHEMA, self)
        self.schemaEdit.setToolTip("The index's schema in that database (tilescribe index --db ...?schema=NAME)")
        form.addRow("Connection", self.connectionCombo)
        form.addRow("Schema", self.schemaEdit)
        self.buttonBox = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        self.buttonBox.accepted.connect(self.accept)
        self.buttonBox.rejected.connect(self.reject)
        self.buttonBox.button(QDialogButtonBox.Ok).setEnabled(self.connectionCombo.count() > 0)
        form.addRow(self.buttonBox)

    def choice(self) -> tuple[str, str]:
        return self.connectionCombo.currentText(), self.schemaEdit.text().strip() or DEFAULT_SCHEMA


def install_in_dock(controller) -> QToolButton:
    """A "PostgreSQL…" button beside the dock's Open…: the chosen index is added to the project,
    listed and ticked. `controller`: the SearchController (its dock, project, refresh_indexes)."""
    dock = controller.dock
    button = QToolButton(dock.openIndexButton.parentWidget())
    button.setObjectName("openPostgresButton")
    button.setText("PostgreSQL…")
    button.setToolTip("Add a PostgreSQL index through a saved QGIS PostgreSQL connection")
    layout = dock.openIndexButton.parentWidget().layout()
    layout.insertWidget(layout.indexOf(dock.openIndexButton) + 1, button)

    def chosen(dialog: AddPostgresIndexDialog) -> None:
        try:
            source = add_to_project(controller.project, *dialog.choice())
        except TileScribeError as exc:
            dock.set_status(str(exc))
            return
        controller.refresh_indexes()
        dock.tick_db(source.db)

    def open_dialog() -> AddPostgresIndexDialog:
        dialog = AddPostgresIndexDialog(dock)
        dialog.accepted.connect(lambda: chosen(dialog))
        dock.postgres_dialog = dialog
        dialog.open()
        return dialog

    button.clicked.connect(open_dialog)
    dock.openPostgresButton = button
    return button


# -- the Index dialog: a PostgreSQL target beside the file ---------------------------------


class PostgresTarget(QWidget):
    """"Index into": the file below, or a saved connection and schema."""

    def __init__(self, parent=None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.targetCombo = QComboBox(self)
        self.targetCombo.addItem(FILE_TARGET, "")
        for name in saved_connections():
            self.targetCombo.addItem(f"PostgreSQL: {name}", name)
        self.schemaEdit = QLineEdit(DEFAULT_SCHEMA, self)
        self.schemaEdit.setToolTip("The index's schema in that database")
        row.addWidget(self.targetCombo, 1)
        row.addWidget(self.schemaEdit)
        self.targetCombo.currentIndexChanged.connect(self._enable)
        self._enable()

    def _enable(self, *_args) -> None:
        self.schemaEdit.setEnabled(bool(self.targetCombo.currentData()))

    def chosen_db(self) -> Optional[str]:
        """The PostgreSQL index chosen (added to the project, so the dock lists it), or None: the file."""
        name = self.targetCombo.currentData()
        if not name:
            return None
        return add_to_project(QgsProject.instance(), name, self.schemaEdit.text()).db


def add_index_target(dialog) -> PostgresTarget:
    """The "Index into" row above the Index dialog's file row."""
    target = PostgresTarget(dialog)
    dialog.outputForm.insertRow(0, "Index into", target)
    return target
