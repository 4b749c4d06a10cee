"""The model download against a fake hub on 127.0.0.1: real huggingface_hub, real files, real hashes."""

from __future__ import annotations

import hashlib
import itertools
import threading

import pytest

from fixtures_hub import TINY_REPO, online
from tilescribe.plugin.core.errors import Cancelled, ModelError
from tilescribe.plugin.core.models.catalogue import ModelSpec
from tilescribe.plugin.core.models.download import download_model
from tilescribe.plugin.core.models.folder import PARTIAL_DIR, find_installed, read_manifest, repo_folder


def tiny_spec(tiny_pair, files=None) -> ModelSpec:
    text, mmproj = tiny_pair
    return ModelSpec(TINY_REPO, TINY_REPO, tuple(files or (text.name, mmproj.name)))


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_stores_the_pair_with_hashes_and_family(hub, tiny_pair, tmp_path):
    events = []
    model = download_model(tiny_spec(tiny_pair), tmp_path, progress=events.append)
    text, mmproj = tiny_pair
    assert model.folder == repo_folder(tmp_path, TINY_REPO)
    assert (model.model.name, model.mmproj.name, model.family) == (text.name, mmproj.name, "llava-1-5")
    assert sha256(model.model) == sha256(text) and sha256(model.mmproj) == sha256(mmproj)
    manifest = read_manifest(model.folder)
    assert {r.file: r.etag for r in manifest.records()} == {text.name: sha256(text), mmproj.name: sha256(mmproj)}
    assert manifest.commit.startswith("c0ffee")
    assert not list((model.folder / PARTIAL_DIR).iterdir())
    final = [e for e in events if e["event"] == "progress" and e["file"] == text.name][-1]
    assert final["done"] == text.stat().st_size == final["size"]
    assert find_installed(tmp_path, TINY_REPO) == model


def test_second_download_fetches_nothing(hub, tiny_pair, tmp_path):
    download_model(tiny_spec(tiny_pair), tmp_path)
    gets = len([entry for entry in hub.log if entry[0] == "cdn"])
    events = []
    download_model(tiny_spec(tiny_pair), tmp_path, progress=events.append)
    assert len([entry for entry in hub.log if entry[0] == "cdn"]) == gets
    assert [e["event"] for e in events] == ["present", "present", "done"]


def test_token_goes_to_the_hub_never_to_the_cdn(hub, tiny_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_tests")
    download_model(tiny_spec(tiny_pair), tmp_path)
    assert {auth for server, auth in hub.auth if server == "hub"} == {"Bearer hf_secret_for_tests"}
    assert {auth for server, auth in hub.auth if server == "cdn"} == {None}


def test_a_file_put_there_by_hand_is_checked_not_fetched(hub, tiny_pair, tmp_path):
    text, _ = tiny_pair
    folder = repo_folder(tmp_path, TINY_REPO)
    folder.mkdir(parents=True)
    (folder / text.name).write_bytes(text.read_bytes())
    download_model(tiny_spec(tiny_pair), tmp_path)
    assert hub.ranges(text.name) == []


def test_a_copy_in_the_hugging_face_cache_is_used_not_fetched(hub, tiny_pair, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import hf_hub_download

    text, _ = tiny_pair
    cache = tmp_path / "hf-cache"
    hf_hub_download(TINY_REPO, text.name, cache_dir=cache, endpoint=hub.endpoint)  # fetched by another tool
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))  # what HF_HOME sets at import
    events = []
    model = download_model(tiny_spec(tiny_pair), tmp_path / "models", progress=events.append)
    assert len(hub.ranges(text.name)) == 1  # only hf_hub_download's own GET
    assert [e["file"] for e in events if e["event"] == "cached"] == [text.name]
    assert sha256(model.model) == sha256(text)


def test_family_is_auto_for_models_not_downloaded_by_tilescribe(tiny_pair):
    from tilescribe.plugin.core.models.folder import family_for_model

    assert family_for_model(tiny_pair[0]) == "auto"  # files in any folder work as before


def test_cancelled_download_resumes_with_a_range_request(hub, tiny_pair, tmp_path, small_chunks):
    text, _ = tiny_pair
    writes = itertools.count()
    with pytest.raises(Cancelled, match="download again to resume"):
        download_model(tiny_spec(tiny_pair), tmp_path, cancel=lambda: next(writes) >= 10)
    part = next((repo_folder(tmp_path, TINY_REPO) / PARTIAL_DIR).glob(f"{text.name}.*.part"))
    kept = part.stat().st_size
    assert kept == 10 * 4096
    model = download_model(tiny_spec(tiny_pair), tmp_path)
    assert hub.ranges(text.name) == [None, f"bytes={kept}-"]
    assert sha256(model.model) == sha256(text)


def test_dropped_connection_is_resumed_in_the_same_download(hub, tiny_pair, tmp_path, small_chunks):
    text, _ = tiny_pair
    hub.cut_after[text.name] = 200_000
    model = download_model(tiny_spec(tiny_pair), tmp_path)
    first, second = hub.ranges(text.name)
    assert first is None and second.startswith("bytes=") and int(second[6:-1]) > 0
    assert sha256(model.model) == sha256(text)


def test_corrupted_file_is_caught_by_the_hash_and_deleted(hub, tiny_pair, tmp_path):
    text, _ = tiny_pair
    hub.corrupt.add(text.name)
    with pytest.raises(ModelError, match="does not match the hub's checksum"):
        download_model(tiny_spec(tiny_pair), tmp_path)
    folder = repo_folder(tmp_path, TINY_REPO)
    assert not (folder / text.name).exists() and not list((folder / PARTIAL_DIR).iterdir())
    assert read_manifest(folder) is None
    hub.corrupt.clear()
    assert sha256(download_model(tiny_spec(tiny_pair), tmp_path).model) == sha256(text)


def test_unreachable_hub_says_so(monkeypatch, tiny_pair, tmp_path, closed_port):
    online(monkeypatch, f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ModelError, match=f"Cannot reach the model hub at http://127.0.0.1:{closed_port}"):
        download_model(tiny_spec(tiny_pair), tmp_path)


def test_renamed_file_gets_a_404_message_naming_it(hub, tiny_pair, tmp_path):
    _, mmproj = tiny_pair
    spec = tiny_spec(tiny_pair, files=("tiny-llava-text-OLD.gguf", mmproj.name))
    with pytest.raises(ModelError, match=r"has no file 'tiny-llava-text-OLD.gguf'.*--files"):
        download_model(spec, tmp_path)


def test_unknown_repository(hub, tmp_path):
    with pytest.raises(ModelError, match="repository nobody/nothing was not found"):
        download_model(ModelSpec("x", "nobody/nothing", ("a.gguf", "b.gguf")), tmp_path)


def test_offline_mode_refuses_to_download(hub, tiny_pair, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        download_model(tiny_spec(tiny_pair), tmp_path)
    assert hub.log == []


def test_not_enough_disk_space_is_found_before_downloading(hub, tiny_pair, small_disk):
    hub.claimed_size[tiny_pair[0].name] = 10 ** 15  # a file larger than any disk
    with pytest.raises(ModelError, match="Not enough free disk space"):
        download_model(tiny_spec(tiny_pair), small_disk)
    assert not [entry for entry in hub.log if entry[0] == "cdn"]


def test_disk_filling_up_mid_download_then_resuming(hub, tiny_pair, small_disk, small_chunks, monkeypatch):
    from tilescribe.plugin.core.models import download

    monkeypatch.setattr(download, "DISK_MARGIN_BYTES", 0)  # the 2 MiB disk holds the tiny pair only
    text, _ = tiny_pair
    hub.stall_after[text.name] = 100_000
    failure = []
    thread = threading.Thread(target=lambda: _capture(failure, download_model, tiny_spec(tiny_pair), small_disk))
    thread.start()
    part_dir = repo_folder(small_disk, TINY_REPO) / PARTIAL_DIR
    _wait_for(lambda: any(p.stat().st_size >= 90_000 for p in part_dir.glob("*.part")))
    filler = small_disk / "filler"  # another program fills the disk meanwhile
    with pytest.raises(OSError), filler.open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    hub.release.set()
    thread.join(30)
    assert failure and isinstance(failure[0], ModelError) and "disk filled up" in str(failure[0])
    filler.unlink()
    hub.stall_after.clear()
    model = download_model(tiny_spec(tiny_pair), small_disk)
    assert hub.ranges(text.name)[-1].startswith("bytes=") and sha256(model.model) == sha256(text)


def _capture(out: list, func, *args):
    try:
        func(*args)
    except Exception as exc:  # handed to the test thread
        out.append(exc)


def _wait_for(condition, timeout_s: float = 20.0):
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
