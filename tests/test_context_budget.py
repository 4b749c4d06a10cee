"""Context planning: prompt + image + answer fit, or a message says which n_ctx does."""

import pytest

from tilescribe.plugin.core.captioning.context_budget import (
    answer_tokens,
    estimate_image_tokens,
    plan_context,
)
from tilescribe.plugin.core.captioning.gguf_header import GgufInfo
from tilescribe.plugin.core.captioning.prompt import DEFAULT_MAX_LEN
from tilescribe.plugin.core.errors import ModelError

BPE = 0.27  # tokens per character of English with a real BPE vocabulary (SmolLM2, Llama 3)


def mmproj(**fields):
    return GgufInfo(path=None, arch="clip", name="", fields=fields)


@pytest.mark.parametrize("fields, image_px, expected", [
    ({"clip.projector_type": "mlp", "clip.vision.image_size": 336, "clip.vision.patch_size": 14}, 512, 576),
    ({"clip.projector_type": "mlp", "clip.vision.image_size": 336, "clip.vision.patch_size": 14,
      "clip.vision.mm_patch_merge_type": "spatial_unpad"}, 512, 2880),
    ({"clip.projector_type": "qwen2.5vl_merger"}, 512, 19 * 19 + 2),
    ({"clip.projector_type": "ldpv2", "clip.vision.image_size": 336, "clip.vision.patch_size": 14}, 512, 144),
    ({"clip.projector_type": "resampler"}, 512, 640),
])
def test_image_tokens_by_projector(fields, image_px, expected):
    assert estimate_image_tokens(mmproj(**fields), image_px) == expected


def plan(**overrides):
    args = dict(n_variants=5, max_len=DEFAULT_MAX_LEN, tokens_per_char=BPE, prompt_tokens=257,
                image_tokens=576, requested_n_ctx=None, n_ctx_train=131072, model_name="m.gguf")
    args.update(overrides)
    return plan_context(**args)


def test_auto_context_holds_the_longest_answer_of_a_llava_1_5():
    p = plan()
    assert p.n_ctx % 256 == 0
    assert p.n_ctx >= 257 + 576 + answer_tokens(5, DEFAULT_MAX_LEN, BPE)
    assert p.max_len == dict(DEFAULT_MAX_LEN) and not p.warnings


def test_auto_context_grows_for_llava_1_6_images():
    assert plan(image_tokens=2880).n_ctx > plan().n_ctx + 2000


def test_explicit_context_that_is_too_small_names_what_to_set():
    with pytest.raises(ModelError, match=r"n_ctx=1024.*image about 576.*Set n_ctx to (\d+)"):
        plan(requested_n_ctx=1024)


def test_tight_context_shrinks_fields_and_warns():
    p = plan(requested_n_ctx=2048)
    assert p.max_len["caption"] < DEFAULT_MAX_LEN["caption"]
    assert answer_tokens(5, p.max_len, BPE) <= 2048 - 257 - 576
    assert any("Set n_ctx to" in w for w in p.warnings)


def test_context_beyond_what_the_model_was_trained_on_warns():
    p = plan(requested_n_ctx=4096, n_ctx_train=2048, image_tokens=16, prompt_tokens=100,
             max_len={"one_sentence": 20, "feature": 20, "caption": 20})
    assert any("trained on" in w and "2048" in w for w in p.warnings)


def test_auto_context_stays_within_the_training_context_when_it_can():
    p = plan(n_ctx_train=2048, max_len={"one_sentence": 20, "feature": 20, "caption": 20})
    assert p.n_ctx <= 2048
