"""Untrusted files and text: an index loads no extension but sqlite-vec, stored text is never run,
a GGUF's chat template is never rendered outside a sandbox, and secrets stay out of every file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from fixtures_server import Reply

from fakes import FakeCaptioner, HashingEmbedder
from helpers import in_process_cli
from rasters import write_raster
from tilescribe.plugin.cli import index_command
from tilescribe.plugin.core.captioning import tiny_gguf
from tilescribe.plugin.core.index.store import Store

PAYLOADS = [
    "'); drop table tiles; --",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% for x in range(3) %}{{ cycler.__init__.__globals__.os.system('id') }}{% endfor %}",
    '" OR 1=1 -- NEAR(a b) * caption:x',
    "<script>alert(1)</script> $(touch /tmp/x) `id`",
]
KEY_ENV = "TILESCRIBE_TEST_UNTRUSTED_KEY"
SECRET = "sk-untrusted-5ecret-never-stored"
URL_PASSWORD = "pa55word-in-url"


@pytest.fixture
def cli(monkeypatch, capsys):
    return in_process_cli(monkeypatch, capsys, HashingEmbedder())


# --- SQLite extensions ------------------------------------------------------------------------------

@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "read-only"])
def test_an_open_index_loads_no_extension_but_sqlite_vec(tmp_path, readonly):
    path = tmp_path / "x.tilescribe.sqlite"
    Store(path, create=True).close()
    with Store(path, readonly=readonly) as store:
        assert store._conn.execute("select vec_version()").fetchone()[0].startswith("v")  # sqlite-vec is there
        for call in ("select load_extension('/nonexistent/evil.so')",
                     "select load_extension('/nonexistent/evil.so', 'sqlite3_evil_init')"):
            with pytest.raises(sqlite3.OperationalError, match="not authorized"):
                store._conn.execute(call)
        with pytest.raises(sqlite3.OperationalError, match="not authorized"):
            store._conn.load_extension("/nonexistent/evil.so")


def test_sql_planted_in_an_index_file_cannot_load_an_extension(tmp_path):
    path = tmp_path / "planted.tilescribe.sqlite"
    Store(path, create=True).close()
    conn = sqlite3.connect(path)  # someone hands over an index with a booby-trapped view
    conn.execute("create view innocent as select load_extension('/nonexistent/evil.so') as x")
    conn.commit()
    conn.close()
    # Refused three times over: Store refuses a file holding views or triggers (issue 22); SQLite
    # never lets schema objects call load_extension(); Store switches extension loading off after sqlite-vec.
    from tilescribe.plugin.core.errors import IndexFileError

    with pytest.raises(IndexFileError, match="view 'innocent'"):
        Store(path)
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.OperationalError, match="unsafe use of load_extension|not authorized"):
        conn.execute("select * from innocent").fetchall()
    conn.close()


# --- stored text is data --------------------------------------------------------------------------

class PayloadCaptioner(FakeCaptioner):
    def caption(self, png: bytes, n_variants: int):
        from tilescribe.plugin.core.captioning.base import CaptionResult
        from tilescribe.plugin.core.captions import CaptionVariant

        self.calls += 1
        variants = [CaptionVariant(p, f"{p} {self.calls}", f"{i} {p}") for i, p in enumerate(PAYLOADS)]
        return CaptionResult(variants[:n_variants], json.dumps([v.to_dict() for v in variants]), 1, 1, 0.0)


def test_captions_holding_sql_or_jinja_are_stored_and_returned_verbatim(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(index_command, "make_captioner", lambda settings: PayloadCaptioner())
    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    db = tmp_path / "p.tilescribe.sqlite"
    code, _, err = cli("index", raster, "--db", db, "--tile-size", 64, "--variants", len(PAYLOADS))
    assert code == 0, err
    with Store(db, readonly=True) as store:
        tiles = store.tiles(1)
        assert [t.status for t in tiles] == ["done", "done"]
        assert [v.one_sentence for v in store.captions_of(tiles[0].id)] == PAYLOADS
        assert store._conn.execute("select count(*) from tiles").fetchone() == (2,)
    for payload in PAYLOADS:
        code, out, err = cli("search", "--db", db, payload, "--format", "json", "-k", 2)
        assert code == 0, err
        assert {hit["caption"] for hit in json.loads(out)} <= set(PAYLOADS)


# --- GGUF chat templates --------------------------------------------------------------------------

def _template_model(folder: Path, template: str) -> Path:
    def fill(writer):
        tiny_gguf._fill_text_model(writer)
        writer.add_chat_template(template)
    return tiny_gguf._write_if_changed(folder / "template-payload.gguf", "llama", fill)


def test_a_gguf_chat_template_payload_is_never_rendered(tmp_path, tiny_pair, cli):
    marker = tmp_path / "escaped"
    # Outside a sandbox this runs a shell; inside llama-cpp-python's sandbox it raises SecurityError.
    # Either way, captioning would fail if the template were ever rendered.
    payload = ("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
               "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    model = _template_model(tmp_path, payload)
    raster = write_raster(tmp_path / "r.tif", width=64, height=64)
    code, _, err = cli("index", raster, "--db", tmp_path / "t.tilescribe.sqlite", "--model", model,
                       "--mmproj", tiny_pair[1], "--tile-size", 64, "--variants", 2)
    assert code == 0 and "1 of 1 tiles captioned" in err, err  # the family's own template was used
    assert not marker.exists()


def test_llama_cpp_renders_gguf_templates_only_in_a_sandbox(tmp_path):
    from jinja2.exceptions import SecurityError
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    marker = tmp_path / "escaped"
    formatter = Jinja2ChatFormatter(
        template="{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}",
        eos_token="</s>", bos_token="<s>")
    with pytest.raises(SecurityError):
        formatter(messages=[{"role": "user", "content": "hi"}])
    assert not marker.exists()


# --- secrets --------------------------------------------------------------------------------------

def _completion(n: int) -> dict:
    variants = [{"one_sentence": f"fields {i}", "feature": f"a road {i}", "caption": f"green fields {i}"}
                for i in range(n)]
    return {"choices": [{"message": {"content": json.dumps({"variants": variants})}}],
            "usage": {"completion_tokens": 5}}


def test_api_keys_and_url_credentials_never_reach_the_index_logs_or_output(
        tmp_path, cli, scripted_server, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    scripted_server.script = [  # a server that echoes the key it got in an error, then answers
        Reply(400, {"error": {"message": f"response_format not supported for key {SECRET}"}}),
        Reply(200, _completion(2)),
    ]
    port = scripted_server.server_address[1]
    url = f"http://tester:{URL_PASSWORD}@127.0.0.1:{port}/v1?api_key={URL_PASSWORD}"
    raster = write_raster(tmp_path / "r.tif", width=128, height=64)
    db = tmp_path / "k.tilescribe.sqlite"
    with caplog.at_level(logging.DEBUG):
        code, out, err = cli("index", raster, "--db", db, "--server", url, "--server-model", "tiny-vlm",
                             "--api-key-env", KEY_ENV, "--tile-size", 64, "--variants", 2)
        assert code == 0, err
        info_code, info_out, info_err = cli("info", "--db", db, "--format", "json")
    assert info_code == 0
    assert all(seen.headers.get("Authorization") == f"Bearer {SECRET}" for seen in scripted_server.seen)
    shown = out + err + info_out + info_err + caplog.text
    files = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(db.name))
    for secret in (SECRET, URL_PASSWORD):
        assert secret not in shown and secret.encode() not in files
    with Store(db, readonly=True) as store:
        record = store.runs()[0].captioner
    assert record["url"] == f"http://***@127.0.0.1:{port}/v1?api_key=***"
    assert record["api_key_env"] == KEY_ENV
    assert "tester" not in json.dumps(record)
