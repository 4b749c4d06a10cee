"""The caption prompt follows the method's rules and the schema bounds what a model may write."""

import pytest

from tilescribe.plugin.core.captioning.prompt import (
    DEFAULT_MAX_LEN,
    PROMPT_VERSION,
    build_prompt,
    field_max_len,
    response_schema,
)


def test_prompt_states_the_papers_rules():
    prompt = build_prompt(5).lower()
    assert "only what is visible" in prompt
    sides = (("top", "north"), ("bottom", "south"), ("left", "west"), ("right", "east"))
    for side, direction in sides:
        said = (f"the {side} of the image is {direction}", f"the {side} is {direction}")
        assert any(text in prompt for text in said)
    assert "never give exact counts or percentages" in prompt
    assert "strict json" in prompt and "exactly 5 items" in prompt
    assert "must differ" in prompt
    for name in ("one_sentence", "feature", "caption"):
        assert f'"{name}"' in prompt


def test_prompt_asks_for_the_requested_count():
    assert "exactly 3 items" in build_prompt(3) and "Write 3 different" in build_prompt(3)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_bad_variant_count_is_refused(bad):
    with pytest.raises(ValueError, match="n_variants"):
        build_prompt(bad)
    with pytest.raises(ValueError, match="n_variants"):
        response_schema(bad)


def test_schema_fixes_the_count_and_bounds_every_field():
    schema = response_schema(4, max_len=60)
    array = schema["properties"]["variants"]
    assert schema["required"] == ["variants"]
    assert array["minItems"] == array["maxItems"] == 4
    item = array["items"]
    assert item["required"] == ["one_sentence", "feature", "caption"]
    for spec in item["properties"].values():
        assert spec == {"type": "string", "minLength": 1, "maxLength": 60}


def test_schema_defaults_and_per_field_bounds():
    default = response_schema(1)["properties"]["variants"]["items"]["properties"]
    assert {k: v["maxLength"] for k, v in default.items()} == dict(DEFAULT_MAX_LEN)
    assert field_max_len({"caption": 50})["caption"] == 50
    assert field_max_len({"caption": 50})["feature"] == DEFAULT_MAX_LEN["feature"]
    with pytest.raises(ValueError, match="unknown fields"):
        field_max_len({"summary": 10})
    with pytest.raises(ValueError, match="positive"):
        field_max_len(0)


def test_prompt_version_is_a_stable_label():
    assert PROMPT_VERSION and PROMPT_VERSION == PROMPT_VERSION.strip()
