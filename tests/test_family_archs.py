"""Every catalogue model and every chat family, proven with its OWN architecture (issue 18).

A tiny random-weight pair with the family's real text architecture (qwen2vl, phi2, qwen2,
llama) and projector (qwen2.5vl_merger, mlp, resampler) goes through BOTH engines: in
process through the family's llama-cpp-python chat handler, and through llama-server with
the family's template. Each loads, encodes a 512 px tile into the number of image tokens the
real model gives, is prompted in the family's chat format, and its answer parses.
"""

from __future__ import annotations

import ctypes
import json
import urllib.request

import pytest

from fixtures_models import png_bytes
from tilescribe.devtools.bench.shaped_gguf import shape_names, shaped_pair
from tilescribe.devtools.bench.family_gguf import (
    FAMILY_ARCHS, expected_fixed_image_tokens, family_of_shape, qwen_image_tokens, write_family_pair)
from tilescribe.plugin.core.captioning.gguf_header import read_gguf_info
from tilescribe.plugin.core.captioning.model_pair import (
    CHAT_HANDLERS, check_pair, embedding_length, guess_family, projector_output_dim)
from tilescribe.plugin.core.captioning.prompt import build_messages
from tilescribe.plugin.core.models.catalogue import load_catalogue

SHORT = 16
TILE_PX = 512  # what `index` renders
CHATML = ("<|im_start|>user\n", "<|im_start|>assistant\n")
VICUNA = ("USER: ", "ASSISTANT:")
# The prompt format each family's model was trained with: (user turn, generation prompt).
FORMAT_MARKERS = {"qwen2.5-vl": CHATML, "minicpm-v-2.6": CHATML, "nanollava": CHATML,
                  "llava-1-5": VICUNA, "llava-1-6": VICUNA, "moondream": ("Question: ", "Answer:")}


def expected_image_tokens(family: str) -> int:
    """Image tokens a 512 x 512 tile becomes with the real model (same image size and patch)."""
    text, vision = FAMILY_ARCHS[family].arch(tiny=False)
    fixed = expected_fixed_image_tokens(vision)
    if fixed is not None:
        return fixed  # llava-1.5 336/14 -> 576; SigLIP 378/14 -> 729
    if family == "qwen2.5-vl":
        return qwen_image_tokens(TILE_PX, TILE_PX, vision)  # 504 x 504 -> 18 x 18 = 324
    if family == "minicpm-v-2.6":
        return 3 * 64  # llava-uhd: overview + a 1 x 2 grid of slices, 64 resampler queries each
    if family == "llava-1-6":
        return 5 * 576  # any-res: overview + 2 x 2 grid (672 x 672 pinpoint), 576 each
    raise AssertionError(f"no expectation for {family}")


# ---------------------------------------------------------------- fast: shapes and headers

def test_every_catalogue_entry_has_its_own_shape():
    names = shape_names()
    for entry in load_catalogue():
        assert entry.name in names, f"catalogue entry {entry.name} has no bench-caption shape"
        assert family_of_shape(entry.name).family == entry.family
    assert set(CHAT_HANDLERS) <= set(FAMILY_ARCHS), "a chat family has no architecture to prove it with"


def test_real_shapes_are_the_published_models():
    q, m, c, llava = (FAMILY_ARCHS[f] for f in ("qwen2.5-vl", "moondream", "minicpm-v-2.6", "llava-1-5"))
    dims = lambda t: (t.arch, t.hidden, t.layers, t.heads, t.kv_heads, t.ffn, t.vocab)  # noqa: E731
    assert dims(q.text) == ("qwen2vl", 2048, 36, 16, 2, 11008, 151936) and q.text.tied_output
    assert (q.vision.projector, q.vision.hidden, q.vision.layers, q.vision.heads, q.vision.patch,
            q.vision.n_wa_pattern) == ("qwen2.5vl_merger", 1280, 32, 16, 14, 8)
    assert dims(m.text) == ("phi2", 2048, 24, 32, 32, 8192, 51200)
    assert (m.vision.projector, m.vision.hidden, m.vision.layers, m.vision.image_size) == ("mlp", 1152, 27, 378)
    assert dims(c.text) == ("qwen2", 3584, 28, 28, 4, 18944, 151666)
    assert (c.vision.projector, c.vision.hidden, c.vision.layers, c.vision.minicpmv_version) == (
        "resampler", 1152, 27, 3)
    assert dims(llava.text)[:6] == ("llama", 4096, 32, 32, 32, 11008) and llava.vision.layers == 23
    for fam in FAMILY_ARCHS.values():
        for text, vision in (fam.arch(False), fam.arch(True)):
            assert text.arch == fam.text.arch and vision.projector == fam.vision.projector
            assert (vision.image_size, vision.patch) == (fam.vision.image_size, fam.vision.patch)
            if text.rope_sections:  # llama.cpp's M-RoPE covers half of each head
                assert sum(text.rope_sections) == text.head_dim // 2
            if vision.projector == "resampler":  # clip.cpp's resampler attention: 128-wide heads
                assert text.hidden % 128 == 0
            if vision.projector == "qwen2.5vl_merger":
                assert (vision.hidden // vision.heads) % 4 == 0 and vision.layers % vision.n_wa_pattern == 0


@pytest.mark.parametrize("family", list(FAMILY_ARCHS))
def test_tiny_pair_headers_say_what_the_real_files_say(family, tmp_path):
    model, mmproj = write_family_pair(family, tmp_path, tiny=True, log=lambda *a: None)
    text, vision = FAMILY_ARCHS[family].arch(tiny=True)
    model_info, mmproj_info = read_gguf_info(model, "model"), read_gguf_info(mmproj, "mmproj")
    assert model_info.arch == text.arch
    assert mmproj_info.fields["clip.projector_type"] == vision.projector
    check_pair(model_info, mmproj_info)
    assert projector_output_dim(mmproj_info) == embedding_length(model_info) == text.hidden
    assert guess_family(model_info, mmproj_info) == family  # auto picks the right chat handler


# ---------------------------------------------------------------- slow: both engines

@pytest.fixture(scope="module")
def tile() -> bytes:
    return png_bytes(TILE_PX, TILE_PX, lambda x, y: (128, 128, 128) if 240 <= x < 272 else (40, 140, 50 + y % 64))


@pytest.fixture(scope="module")
def family_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def _mtmd_image_tokens(captioner, png: bytes) -> int:
    """Image tokens mtmd makes of `png` with the captioner's own chat handler and projector."""
    from llama_cpp import mtmd_cpp

    handler = captioner._llm.chat_handler
    handler._init_mtmd_context(captioner._llm)
    bitmap = handler._create_bitmap_from_bytes(png)
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    try:
        text = mtmd_cpp.mtmd_input_text()
        marker = mtmd_cpp.mtmd_default_marker()
        text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
        bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd_cpp.mtmd_tokenize(handler.mtmd_ctx, chunks, ctypes.byref(text), bitmaps, 1) == 0
        total = 0
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                total += mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
        return total
    finally:
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bitmap)


def _handler_prompt(handler, messages) -> str:
    """The text the chat handler sends (its own template, rendered as its __call__ renders it)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not any(m["role"] == "system" for m in messages) and handler.DEFAULT_SYSTEM_MESSAGE:
        messages = [{"role": "system", "content": handler.DEFAULT_SYSTEM_MESSAGE}] + messages
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(handler.CHAT_FORMAT)
    return template.render(messages=messages, add_generation_prompt=True, eos_token="", bos_token="")


def _post(server, path: str, body: dict) -> dict:
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {server.api_key}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=300) as response:
        return json.loads(response.read())


def _server_prompt_tokens(server, content) -> int:
    answer = _post(server, "/v1/chat/completions", {
        "model": "tilescribe", "messages": [{"role": "user", "content": content}], "max_tokens": 1, "seed": 0})
    return int(answer["usage"]["prompt_tokens"])


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_ARCHS))
def test_family_runs_in_process_through_its_chat_handler(family, family_cache, tile):
    from tilescribe.plugin.core.captioning.llama_backend import LlamaCppCaptioner

    model, mmproj = shaped_pair(family, cache=family_cache, tiny=True, log=lambda *a: None)
    with LlamaCppCaptioner(model, mmproj, family="auto", max_len=SHORT, n_variants=1) as captioner:
        assert captioner.family == family
        assert captioner.describe()["chat_handler"] == CHAT_HANDLERS[family]
        result = captioner.caption(tile, 1)  # grammar-constrained answer, parsed by our parser
        assert len(result.variants) == 1 and result.variants[0].caption
        assert _mtmd_image_tokens(captioner, tile) == expected_image_tokens(family)
        prompt = _handler_prompt(captioner._llm.chat_handler, build_messages("IMAGE", 1, family))
        user, answer = FORMAT_MARKERS[family]
        assert user in prompt and prompt.rstrip(" \n").endswith(answer.rstrip(" \n")), prompt[-200:]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_ARCHS))
def test_family_runs_in_llama_server_through_its_template(family, family_cache, tile):
    from tilescribe.plugin.core.captioning.llama_server import find_llama_server
    from tilescribe.plugin.core.captioning.server_engine import LlamaServerCaptioner
    from tilescribe.plugin.core.errors import ModelError

    try:
        find_llama_server()
    except ModelError as exc:
        pytest.skip(f"no llama-server: {exc}")
    import base64

    model, mmproj = shaped_pair(family, cache=family_cache, tiny=True, log=lambda *a: None)
    with LlamaServerCaptioner(model, mmproj, family="auto", slots=1, max_len=SHORT, n_variants=1) as captioner:
        assert captioner.family == family
        # llama-server's JSON-schema grammar allows "\n\n" + 20 spaces/tabs between JSON tokens
        # (common/json-schema-to-grammar.cpp SPACE_RULE; llama-cpp-python's allows one space): a
        # random tiny phi2 spends its whole planned budget on that padding. Room for it here.
        captioner._client.max_tokens = 512
        result = captioner.caption(tile, 1)
        assert len(result.variants) == 1 and result.variants[0].caption
        server = captioner.server
        prompt = _post(server, "/apply-template", {"messages": [{"role": "user", "content": "Describe."}]})["prompt"]
        user, answer = FORMAT_MARKERS[family]
        assert user in prompt and prompt.rstrip(" \n").endswith(answer.rstrip(" \n")), prompt
        uri = "data:image/png;base64," + base64.b64encode(tile).decode("ascii")
        text = {"type": "text", "text": "Describe."}
        with_image = _server_prompt_tokens(server, [{"type": "image_url", "image_url": {"url": uri}}, text])
        without = _server_prompt_tokens(server, [text])
        # + the family's image delimiters (Qwen's vision_start/end, MiniCPM's <image>/<slice> markers)
        assert 0 <= (with_image - without) - expected_image_tokens(family) <= 8, (with_image, without)


def _catalogue_names() -> list[str]:
    return [entry.name for entry in load_catalogue()]


@pytest.mark.slow
@pytest.mark.parametrize("name", _catalogue_names())
def test_bench_caption_tiny_gives_both_engines_for_every_catalogue_model(name, tmp_path, monkeypatch, capsys):
    """`tilescribe bench-caption --shape NAME --tiny ...` for each name `models list` shows."""
    from tilescribe.plugin.cli.main import main
    from tilescribe.devtools.bench import shaped_gguf
    from tilescribe.plugin.core.captioning.llama_server import find_llama_server
    from tilescribe.plugin.core.errors import ModelError

    try:
        find_llama_server()
    except ModelError as exc:
        pytest.skip(f"no llama-server: {exc}")
    monkeypatch.setattr(shaped_gguf, "CACHE", tmp_path / "models")
    code = main(["bench-caption", "--shape", name, "--tiny", "--tiles", "1", "--answer-tokens", "16",
                 "--settings", "in-process", "server:1", "--format", "json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["engine"], r["slots"]) for r in rows] == [("llama-cpp-python", 1), ("llama-server", 1)]
    for row in rows:
        assert row["shape"] == f"{name} (tiny)" and row["output_tokens"] == 16 and row["prompt_tokens"] > 200
