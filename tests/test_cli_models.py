"""`tilescribe models ...` against the fake hub: in-process, and as the subprocess QGIS starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from fixtures_hub import TINY_REPO
from tilescribe.plugin.cli.main import main
from tilescribe.plugin.core.captioning.device import APPLE, NVIDIA, cpu_features, device_report, gpu_hint
from tilescribe.plugin.core.models.folder import PARTIAL_DIR, repo_folder


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json_gives_the_catalogue(capsys, tmp_path):
    code, out, _ = cli(capsys, "models", "list", "--format", "json", "--dir", tmp_path)
    rows = json.loads(out)
    assert code == 0 and {"qwen2.5-vl-3b", "moondream2", "llava-1.5-7b", "minicpm-v-2.6"} <= {r["name"] for r in rows}
    for row in rows:
        assert {"name", "repo", "files", "size_bytes", "family"} <= set(row) and len(row["files"]) == 2
        assert row["installed"] is False


def test_download_json_progress_then_list_and_verify(hub, tiny_pair, capsys, tmp_path):
    text, mmproj = tiny_pair
    code, out, err = cli(capsys, "models", "download", TINY_REPO, "--files", text.name, mmproj.name,
                         "--dir", tmp_path, "--progress", "json")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert [e["event"] for e in events if e["event"] in ("file", "done")] == ["file", "file", "done"]
    assert events[-1]["model"] == str(repo_folder(tmp_path, TINY_REPO) / text.name)
    code, out, _ = cli(capsys, "models", "verify", "--dir", tmp_path)
    assert code == 0 and out.startswith("captioning device: llama.cpp")
    assert out.count("sha256 matches the hub") == 2 and "a usable pair, chat family llava-1-5" in out


def test_verify_catches_a_damaged_download(hub, tiny_pair, capsys, tmp_path):
    text, mmproj = tiny_pair
    cli(capsys, "models", "download", TINY_REPO, "--files", text.name, mmproj.name, "--dir", tmp_path)
    damaged = repo_folder(tmp_path, TINY_REPO) / mmproj.name
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    code, out, _ = cli(capsys, "models", "verify", repo_folder(tmp_path, TINY_REPO))
    assert code == 1 and f"FAIL {damaged}: sha256 differs from the hub's" in out


def test_download_errors_are_one_line(hub, capsys, tmp_path):
    code, _, err = cli(capsys, "models", "download", TINY_REPO, "--dir", tmp_path)
    assert code == 2 and "--files MODEL.gguf MMPROJ.gguf" in err and "Traceback" not in err


def test_interrupted_subprocess_download_resumes(tiny_pair, tmp_path):
    """The QGIS task's path: a `models download` process stopped by SIGINT, then run again."""
    from fake_hub import FakeHub

    text, mmproj = tiny_pair
    big = text.read_bytes() + bytes(12 * 1024 * 1024)  # > one 10 MiB write; GGUF readers ignore the tail
    hub = FakeHub()
    hub.add(TINY_REPO, text.name, big)
    hub.add(TINY_REPO, mmproj.name, mmproj.read_bytes())
    hub.stall_after[text.name] = 11 * 1024 * 1024
    hub.start()
    try:
        command = [sys.executable, "-m", "tilescribe.plugin.cli", "models", "download", TINY_REPO, "--files",
                   text.name, mmproj.name, "--dir", str(tmp_path), "--progress", "json"]
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", NO_PROXY="127.0.0.1")
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        parts = repo_folder(tmp_path, TINY_REPO) / PARTIAL_DIR
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size >= 10 * 1024 * 1024 for p in parts.glob("*.part")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        try:  # communicate, not wait: it drains the pipes, so a chatty child never blocks on a full one
            _, err = first.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            first.kill()
            _, err = first.communicate()
            raise AssertionError(f"models download went on 30 s after SIGINT; its stderr:\n{err[-3000:]}") from None
        assert first.returncode == 130, err[-3000:]
        hub.stall_after.clear()
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert hub.ranges(text.name)[-1] == f"bytes={10 * 1024 * 1024}-"
        assert (repo_folder(tmp_path, TINY_REPO) / text.name).read_bytes() == big
    finally:
        hub.stop()


def test_device_report_of_this_build():
    report = device_report()
    assert report.llama_cpp and report.gpu_offload in (True, False) and report.cpu_features
    assert report.line().startswith(f"captioning device: llama.cpp {report.llama_cpp}")


def test_gpu_hints():
    assert "CUDA toolkit" in gpu_hint([NVIDIA], False) and "Metal" in gpu_hint([APPLE], False)
    assert "--gpu-layers" in gpu_hint([NVIDIA], True) and gpu_hint([], False) == ""
    assert cpu_features("CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | AVX2 = 1 |") == ["SSE3", "AVX", "AVX2"]
