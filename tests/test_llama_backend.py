"""The llama.cpp captioner with real llama-cpp-python and real (tiny or small) GGUF models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFWriter

from tilescribe.plugin.core.captioning.llama_backend import (
    GgufInfo,
    LlamaCppCaptioner,
    guess_family,
)
from tilescribe.plugin.core.captioning.tiny_gguf import write_tiny_mmproj, write_tiny_pair
from tilescribe.plugin.core.errors import CaptionError, ModelError

# Short strings keep a random-weight model's answer (up to 4 byte tokens a
# character) well inside n_ctx, and the tests fast.
SHORT = 16


@pytest.fixture(scope="module")
def tiny_captioner(tiny_pair):
    captioner = LlamaCppCaptioner(*tiny_pair, max_len=SHORT)
    yield captioner
    captioner.close()


def assert_valid(variants, n):
    assert len(variants) == n
    keys = {(v.one_sentence.lower(), v.feature.lower(), v.caption.lower()) for v in variants}
    assert len(keys) == n, "variants must differ"
    for v in variants:
        assert v.one_sentence and v.feature and v.caption
        assert all(ch.isprintable() for ch in v.embedding_text().replace("\n", " "))


def test_tiny_pair_writes_the_requested_variants(tiny_captioner, tile_png):
    result = tiny_captioner.caption(tile_png, 3)
    assert_valid(result.variants, 3)
    assert 1 <= result.attempts <= 3
    assert result.completion_tokens > 0 and result.seconds > 0
    assert result.raw.lstrip().startswith("{")


@pytest.mark.slow
def test_same_tile_gives_the_same_captions(tiny_captioner, tile_png):
    # A fixed seed per attempt: re-indexing a raster reproduces its captions.
    first = tiny_captioner.caption(tile_png, 2)
    again = tiny_captioner.caption(tile_png, 2)
    assert (first.raw, first.variants) == (again.raw, again.variants)


@pytest.mark.slow
def test_answers_cut_off_at_their_budget_fail_cleanly_after_bounded_retries(tiny_pair, tile_png):
    # Random weights fill every string to maxLength: 3 x 600 characters need far more than 60 tokens.
    with LlamaCppCaptioner(*tiny_pair, max_tokens=60, max_len=200, max_attempts=2) as captioner:
        with pytest.raises(CaptionError) as err:
            captioner.caption(tile_png, 3)
    message = str(err.value)
    assert "tiny-llava-text.gguf gave no valid captions in 2 attempts" in message
    assert "cut off at its budget of 60 tokens" in message


def test_context_too_small_for_the_prompt_names_the_setting(tiny_pair):
    with pytest.raises(ModelError, match=r"context \(n_ctx=256\) is too small.*Set n_ctx to \d+"):
        LlamaCppCaptioner(*tiny_pair, n_ctx=256)


def test_context_of_64_tokens_says_what_it_needs(tiny_pair):
    # Once: "could not broadcast input array from shape (64,) into shape (0,)" on every tile.
    with pytest.raises(ModelError, match=r"n_ctx=64.*leaving 0 for an answer.*Set n_ctx to"):
        LlamaCppCaptioner(*tiny_pair, n_ctx=64)


def test_automatic_context_fits_prompt_image_and_the_longest_answer(tiny_pair):
    with LlamaCppCaptioner(*tiny_pair, max_len=SHORT, n_variants=3) as captioner:
        plan = captioner.plan
        assert captioner.n_ctx == plan.n_ctx and plan.n_ctx % 256 == 0
        assert plan.max_tokens > 0 and plan.max_len == {"one_sentence": SHORT, "feature": SHORT, "caption": SHORT}
        assert not captioner.warnings
        assert captioner.describe()["settings"]["n_ctx_setting"] == "auto"


@pytest.mark.slow
def test_small_context_shrinks_the_fields_instead_of_overflowing(tiny_pair, tile_png):
    # The default field bounds (200/400/800 characters) at this vocabulary's rate cannot fit in
    # 2048 tokens: the fields shrink to fit, with a warning that names the n_ctx to set.
    with LlamaCppCaptioner(*tiny_pair, n_ctx=2048, max_attempts=1) as captioner:
        assert any("Set n_ctx to" in w and "limited to" in w for w in captioner.warnings)
        assert captioner.max_len["caption"] < 800
        try:
            captioner.caption(tile_png, 5)
        except CaptionError as exc:  # a random model may write an invalid answer, never overflow
            assert "llama_decode" not in str(exc)


def test_a_prompt_that_fills_the_context_fails_the_tile_not_the_run(tiny_captioner):
    llm = tiny_captioner._llm
    with pytest.raises(CaptionError, match="fill the context.*raise n_ctx"):
        llm.create_completion(prompt=[1] * (llm.n_ctx() - 4), max_tokens=None)


def test_not_a_png_is_refused(tiny_captioner):
    with pytest.raises(CaptionError, match="not a PNG"):
        tiny_captioner.caption(b"GIF89a....", 2)


@pytest.mark.slow
def test_smollm2_with_tiny_projector_gives_valid_json_captions(smollm2_pair, tile_png):
    # A real 135M instruction model: it sees noise, but must answer in the format.
    with LlamaCppCaptioner(*smollm2_pair, max_len=40, temperature=0.7, max_attempts=4) as captioner:
        result = captioner.caption(tile_png, 2)
    assert_valid(result.variants, 2)
    assert json.loads(result.raw)["variants"]  # a real model's answer is strict JSON


def test_describe_fingerprints_files_without_revealing_folders(tiny_captioner, tiny_pair):
    record = tiny_captioner.describe()
    text = json.dumps(record)  # must be JSON-able as it is
    assert str(tiny_pair[0].parent) not in text
    assert record["backend"] == "llama.cpp"
    assert record["family"] == "llava-1-5" and record["chat_handler"] == "Llava15ChatHandler"
    for role, path in zip(("model", "mmproj"), tiny_pair):
        assert record[role]["name"] == path.name
        assert record[role]["size"] == path.stat().st_size
        assert len(record[role]["sha256_ends"]) == 64
    assert record["model"]["sha256_ends"] != record["mmproj"]["sha256_ends"]
    assert record["settings"]["max_len"]["caption"] == SHORT
    assert record["prompt_version"]


def test_close_twice_and_use_after_close(tiny_pair, tile_png):
    captioner = LlamaCppCaptioner(*tiny_pair)
    captioner.close()
    captioner.close()
    with pytest.raises(ModelError, match="closed"):
        captioner.caption(tile_png, 2)


def test_missing_model_and_missing_mmproj(tiny_pair, tmp_path):
    model, mmproj = tiny_pair
    with pytest.raises(ModelError, match="model file does not exist: .*nope.gguf"):
        LlamaCppCaptioner(tmp_path / "nope.gguf", mmproj)
    with pytest.raises(ModelError, match="mmproj file does not exist: .*nope-mmproj.gguf"):
        LlamaCppCaptioner(model, tmp_path / "nope-mmproj.gguf")


@pytest.mark.parametrize("keep", [0.5, 0.001], ids=["data-cut", "header-cut"])
def test_truncated_gguf(tiny_pair, tmp_path, keep):
    model, mmproj = tiny_pair
    for role, source in (("model", model), ("mmproj", mmproj)):
        cut = tmp_path / f"cut-{source.name}"
        cut.write_bytes(source.read_bytes()[: int(source.stat().st_size * keep)])
        pair = (cut, mmproj) if role == "model" else (model, cut)
        with pytest.raises(ModelError, match=f"{role} file .*cut-.*truncated.*Download it again"):
            LlamaCppCaptioner(*pair)


def test_tiny_models_are_deterministic_and_not_rewritten(tiny_pair, tmp_path):
    again = write_tiny_pair(tmp_path)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in tiny_pair]
    stamps = [p.stat().st_mtime_ns for p in again]
    assert [p.stat().st_mtime_ns for p in write_tiny_pair(tmp_path)] == stamps


def test_tiny_models_command_line(tmp_path):
    module = "tilescribe.plugin.core.captioning.tiny_gguf"
    done = subprocess.run([sys.executable, "-m", module, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(Path(line).name for line in done.stdout.split()) == [
        "tiny-llava-mmproj.gguf", "tiny-llava-text.gguf"]
    assert "meaningless" in done.stderr


def test_file_that_is_not_gguf(tiny_pair, tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b'{"__metadata__": {}}' + bytes(100))
    with pytest.raises(ModelError, match="model.safetensors is not a GGUF file"):
        LlamaCppCaptioner(fake, tiny_pair[1])
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty.gguf is not a GGUF file"):
        LlamaCppCaptioner(tiny_pair[0], empty)


def test_text_model_given_as_mmproj(tiny_pair, smollm2_path):
    with pytest.raises(ModelError, match="SmolLM2.*not a vision projector.*without vision support"):
        LlamaCppCaptioner(tiny_pair[0], smollm2_path)


def test_projector_given_as_model(tiny_pair):
    with pytest.raises(ModelError, match="tiny-llava-mmproj.gguf is a vision projector"):
        LlamaCppCaptioner(tiny_pair[1], tiny_pair[1])


def test_projector_of_another_model_is_a_mismatch(smollm2_path, mismatched_mmproj):
    with pytest.raises(ModelError, match="does not match the model.*size 64.*expects 576"):
        LlamaCppCaptioner(smollm2_path, mismatched_mmproj)


def test_load_failure_inside_llama_cpp_names_the_file(tiny_pair, tmp_path):
    # Headers our checks accept, contents llama.cpp refuses: its own reason is kept.
    bad_model = _write_gguf(tmp_path / "no-tensors.gguf", "llama", {"llama.embedding_length": 64})
    with pytest.raises(ModelError, match="cannot load the model file .*no-tensors.gguf"):
        LlamaCppCaptioner(bad_model, tiny_pair[1])
    odd = write_tiny_mmproj(tmp_path / "odd-mmproj.gguf", 64)
    _rewrite_string(odd, "clip.projector_type", "mlp", "zzz")
    with pytest.raises(ModelError, match="cannot load the mmproj file .*odd-mmproj.gguf.*zzz"):
        LlamaCppCaptioner(tiny_pair[0], odd)


def test_unknown_family_is_refused(tiny_pair):
    with pytest.raises(ModelError, match="Unknown model family 'llava-9'.*moondream"):
        LlamaCppCaptioner(*tiny_pair, family="llava-9")


def test_explicit_family_picks_its_chat_handler(tiny_pair, tile_png):
    with LlamaCppCaptioner(*tiny_pair, family="nanollava", max_len=SHORT) as captioner:
        assert captioner.describe()["chat_handler"] == "NanoLlavaChatHandler"
        assert_valid(captioner.caption(tile_png, 2).variants, 2)


@pytest.mark.parametrize(
    "model_name, mmproj_name, projector, family",
    [
        ("llava-v1.5-7b-Q4_K.gguf", "mmproj-model-f16.gguf", "mlp", "llava-1-5"),
        ("llava-v1.6-mistral-7b.Q4_K_M.gguf", "mmproj-model-f16.gguf", "mlp", "llava-1-6"),
        ("moondream2-text-model-f16.gguf", "moondream2-mmproj-f16.gguf", "mlp", "moondream"),
        ("nanollava-text-model-f16.gguf", "nanollava-mmproj-f16.gguf", "mlp", "nanollava"),
        ("Qwen2.5-VL-3B-Q4_K_M.gguf", "mmproj-Qwen2.5-VL.gguf", "qwen2.5vl_merger", "qwen2.5-vl"),
        ("ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf", "resampler", "minicpm-v-2.6"),
        ("model.gguf", "mmproj.gguf", "mlp", "llava-1-5"),
    ],
)
def test_auto_family_from_metadata_and_names(model_name, mmproj_name, projector, family):
    model = GgufInfo(Path(model_name), "llama", "", {})
    mmproj = GgufInfo(Path(mmproj_name), "clip", "", {"clip.projector_type": projector})
    assert guess_family(model, mmproj) == family


def test_importing_the_backend_does_not_load_llama_cpp():
    code = (
        "import sys, tilescribe.plugin.core.captioning.llama_backend; "
        "sys.exit('llama_cpp' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def _write_gguf(path: Path, arch: str, fields: dict) -> Path:
    writer = GGUFWriter(path, arch)
    for key, value in fields.items():
        writer.add_uint32(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _rewrite_string(path: Path, key: str, old: str, new: str) -> None:
    """Edits one string value in place (same length), as a damaged download would."""
    data = path.read_bytes()
    string_type = (8).to_bytes(4, "little")
    marker = key.encode() + string_type + len(old).to_bytes(8, "little") + old.encode()
    assert data.count(marker) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(marker, marker[: -len(old)] + new.encode()))
