"""Issue 22: a download owns its partial files; what was checked of each file is said, never more."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from fixtures_hub import TINY_REPO
from tilescribe.plugin.core.errors import ModelError
from tilescribe.plugin.core.models.catalogue import ModelSpec
from tilescribe.plugin.core.models.download import download_model
from tilescribe.plugin.core.models.folder import PARTIAL_DIR, read_manifest, repo_folder
from tilescribe.plugin.core.models.verify import verify_path


def tiny_spec(tiny_pair) -> ModelSpec:
    text, mmproj = tiny_pair
    return ModelSpec(TINY_REPO, TINY_REPO, (text.name, mmproj.name))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_download_of_the_same_model_is_refused_while_the_first_runs(hub, tiny_pair, tmp_path):
    text, mmproj = tiny_pair
    hub.stall_after[text.name] = 1000
    first_events, first_error = [], []

    def first():
        try:
            download_model(tiny_spec(tiny_pair), tmp_path, progress=first_events.append)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            first_error.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        deadline = threading.Event()
        while not any(e["event"] == "file" for e in first_events) and not deadline.wait(0.05):
            pass
        releaser = threading.Timer(5, hub.release.set)  # old code: the second one stalled too, then appended
        releaser.start()
        with pytest.raises(ModelError) as refused:
            download_model(tiny_spec(tiny_pair), tmp_path)
        releaser.cancel()
    finally:
        hub.release.set()
        thread.join(60)
    folder = repo_folder(tmp_path, TINY_REPO)
    message = str(refused.value)
    assert f"Another download of {TINY_REPO} into {folder} is running" in message and "wait for it" in message
    assert not first_error
    assert sha256(folder / text.name) == sha256(text) and sha256(folder / mmproj.name) == sha256(mmproj)


def test_a_partial_file_planted_as_a_symlink_is_never_followed(hub, tiny_pair, tmp_path):
    text, _ = tiny_pair
    folder = repo_folder(tmp_path, TINY_REPO)
    (folder / PARTIAL_DIR).mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    planted = folder / PARTIAL_DIR / f"{text.name}.{sha256(text)[:16]}.part"
    planted.symlink_to(victim)
    model = download_model(tiny_spec(tiny_pair), tmp_path)
    assert victim.read_bytes() == b"precious"
    assert sha256(model.model) == sha256(text) and not model.model.is_symlink()


def test_a_mirror_without_content_hashes_is_said_per_file_and_verify_reports_it(hub, tiny_pair, tmp_path):
    text, mmproj = tiny_pair
    hub.plain_etag.add(text.name)
    events = []
    model = download_model(tiny_spec(tiny_pair), tmp_path, progress=events.append)
    checked = {e["file"]: e["by"] for e in events if e["event"] == "checked"}
    assert checked == {text.name: "size", mmproj.name: "sha256"}
    record = read_manifest(model.folder).record(text.name)
    assert record.etag and "sha256" not in checked[text.name]
    checks = {os.path.basename(c.subject): c for c in verify_path(model.folder)}
    assert "size only" in checks[text.name].message and "content not verified" in checks[text.name].message
    assert checks[mmproj.name].message.startswith("sha256 matches the hub")


def test_the_command_line_says_which_files_were_hash_checked(hub, tiny_pair, tmp_path, capsys):
    from tilescribe.plugin.cli.main import main

    text, mmproj = tiny_pair
    hub.plain_etag.add(text.name)
    hub.corrupt.add(text.name)  # a mirror that alters a file and gives no hash: only the size can be checked
    code = main(["models", "download", TINY_REPO, "--files", text.name, mmproj.name, "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0
    assert f"{text.name}: size checked only: the hub at " in err and "gave no content hash" in err
    assert f"{mmproj.name}: sha256 checked" in err


@pytest.mark.parametrize("size", [10 ** 400, 2 ** 63, -5])
def test_a_declared_size_no_file_can_have_is_refused_naming_the_file(hub, tiny_pair, tmp_path, size):
    text, _ = tiny_pair
    hub.claimed_size[text.name] = size
    with pytest.raises(ModelError) as refused:
        download_model(tiny_spec(tiny_pair), tmp_path)
    message = str(refused.value)
    assert f"declares the size of {TINY_REPO}/{text.name} as" in message and "Check HF_ENDPOINT" in message
    assert not (repo_folder(tmp_path, TINY_REPO) / text.name).exists()
