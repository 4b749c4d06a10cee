"""The HTTP captioner over https: a trusted certificate works, an untrusted one is named."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading

import pytest
from fixtures_server import Reply, ScriptedServer, completion

from tilescribe.plugin.core.captioning.http_backend import OpenAICompatibleCaptioner
from tilescribe.plugin.core.errors import Cancelled, ModelError


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl), and its key."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def https_server(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = ScriptedServer()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def https_url(server) -> str:
    return server.url.replace("http://", "https://")


def test_a_trusted_https_server_captions(https_server, certificate, tile_png, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test certificate
    https_server.script = [Reply(200, completion(2))]
    cap = OpenAICompatibleCaptioner(https_url(https_server), "m", api_key="tls-key-123456")
    assert len(cap.caption(tile_png, 2).variants) == 2
    assert https_server.seen[0].headers["Authorization"] == "Bearer tls-key-123456"


def test_cancel_ends_a_trickling_https_request(https_server, certificate, tile_png, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    https_server.script = [Reply(200, completion(1), trickle_s=0.05)]
    cap = OpenAICompatibleCaptioner(https_url(https_server), "m", timeout_s=60)
    timer = threading.Timer(0.5, cap.cancel)
    timer.start()
    with pytest.raises(Cancelled):
        cap.caption(tile_png, 1)
    timer.join()


def test_an_untrusted_certificate_is_named(https_server, tile_png, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    https_server.script = [Reply(200, completion(1))]
    with pytest.raises(ModelError, match=r"TLS with the captioning server https://127\.0\.0\.1:\d+ failed: .*"
                                         r"certificate verify failed.*Check https and the server's certificate"):
        OpenAICompatibleCaptioner(https_url(https_server), "m").caption(tile_png, 1)
