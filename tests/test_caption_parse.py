"""Parsing model answers as they really come: fenced, chatty, broken, cut off or repetitive."""

import json

import pytest

from tilescribe.plugin.core.captioning.base import caption_with_retries
from tilescribe.plugin.core.captioning.parse import clean_text, parse_variants
from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.errors import CaptionError


def item(i: int) -> dict:
    return {
        "one_sentence": f"Farmland {i} with a road.",
        "feature": f"A road runs north to south through field {i}.",
        "caption": f"Green fields, variant {i}, crossed by a straight road.",
    }


def answer(n: int) -> str:
    return json.dumps({"variants": [item(i) for i in range(n)]})


def test_strict_json_gives_variants_in_order():
    variants = parse_variants(answer(3), 3)
    assert variants == [CaptionVariant.from_mapping(item(i)) for i in range(3)]


@pytest.mark.parametrize(
    "raw",
    [
        "```json\n" + answer(2) + "\n```",
        "```\n" + answer(2) + "\n```\nHope this helps!",
        "Sure! Here are the descriptions:\n" + answer(2) + "\nLet me know [if] you need more.",
        "See [1] below. " + answer(2),
        answer(2) + " }]} trailing garbage {",
        json.dumps([item(0), item(1)]),  # a bare list instead of {"variants": [...]}
        json.dumps({"captions": [item(0), item(1)]}),  # the wrapper renamed
        "\ufeff" + answer(2),
    ],
    ids=["fence", "fence-and-prose", "prose-around", "bracket-in-prose", "trailing",
         "bare-list", "renamed-wrapper", "bom"],
)
def test_json_wrapped_in_noise_still_parses(raw):
    assert parse_variants(raw, 2) == [CaptionVariant.from_mapping(item(i)) for i in range(2)]


def test_raw_control_characters_from_byte_tokens_are_removed():
    raw = (
        '{"variants": [{"one_sentence": "A lake\x01 and\x07 a\tfield\n", '
        '"feature": "Lake in the\x1b west\u200b", "caption": "Calm \ufffdwater   by\r\nfields."}]}'
    )
    (variant,) = parse_variants(raw, 1)
    expected = CaptionVariant("A lake and a field", "Lake in the west", "Calm water by fields.")
    assert variant == expected


def test_byte_token_debris_cannot_break_storage():
    # Escaped lone surrogates and private-use characters come out of byte tokens;
    # a lone surrogate cannot even be encoded as UTF-8 for the index.
    raw = (
        '{"variants": [{"one_sentence": "Road\\udf79 west\uf06d", '
        '"feature": "a\\u0000b", "caption": "ok"}]}'
    )
    (variant,) = parse_variants(raw, 1)
    assert variant == CaptionVariant("Road west", "a b", "ok")
    variant.embedding_text().encode("utf-8")


def test_truncated_answer_keeps_complete_items():
    raw = answer(4)
    cut = raw[: raw.index('"caption"', raw.index("variant 3") - 120) + 12]  # inside item 4
    assert len(parse_variants(cut, 3)) == 3
    with pytest.raises(CaptionError, match="expected 4 caption variants, got 3 valid.*cut off"):
        parse_variants(cut, 4)


def test_trailing_comma_and_missing_close_still_salvage():
    raw = '{"variants": [' + json.dumps(item(0)) + ", " + json.dumps(item(1)) + ",]"
    assert len(parse_variants(raw, 2)) == 2


def test_extra_variants_are_dropped_when_enough_are_valid():
    assert len(parse_variants(answer(7), 5)) == 5


def test_duplicates_are_caught_ignoring_case_and_spacing():
    twin = {k: "  " + v.upper().replace(" ", "   ") for k, v in item(0).items()}
    raw = json.dumps({"variants": [item(0), twin, item(2)]})
    with pytest.raises(CaptionError, match="variant 2 repeats variant 1"):
        parse_variants(raw, 3)
    assert len(parse_variants(raw, 2)) == 2  # the duplicate is dropped, two remain


def test_empty_or_missing_field_is_rejected_with_its_name():
    blank = dict(item(1), feature="  \x00 ")
    missing = {"one_sentence": "x", "caption": "y"}
    raw = json.dumps({"variants": [item(0), blank, missing]})
    with pytest.raises(CaptionError) as err:
        parse_variants(raw, 3)
    assert "variant 2 has an empty 'feature'" in str(err.value)
    assert "variant 3 has an empty 'feature'" in str(err.value)


def test_wrong_count_says_how_many():
    with pytest.raises(CaptionError, match="expected 5 caption variants, got 2 valid"):
        parse_variants(answer(2), 5)


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I cannot describe this image.", "no JSON"),
        ('{"answer": "a field"}', "JSON has no"),
        ('["a field", "a road"]', "no JSON"),
        ('{"variants": ["a field", "a road"]}', "item 1 is not an object"),
        ('{"variants": [', "cut off or malformed"),
        ('{"variants": [{"one_sentence": "A river', "cut off or malformed"),
    ],
)
def test_unusable_answers_raise_a_reason(raw, reason):
    with pytest.raises(CaptionError, match=reason):
        parse_variants(raw, 2)


def test_field_variations_models_write_are_accepted():
    raw = json.dumps({"Variants": [{
        "One Sentence": "A harbour.",
        "feature": ["Piers in the east", "boats in the south"],
        "CAPTION": 42,
    }]})
    (variant,) = parse_variants(raw, 1)
    assert variant == CaptionVariant("A harbour.", "Piers in the east; boats in the south", "42")


def test_single_variant_without_wrapper():
    assert parse_variants(json.dumps(item(0)), 1) == [CaptionVariant.from_mapping(item(0))]


def test_clean_text_collapses_whitespace():
    assert clean_text(" a\n\n b\x00c\u2028d ") == "a b c d"


def test_retry_loop_recovers_and_counts_attempts():
    answers = iter(["not json", answer(1) + answer(1), answer(2)])
    seen = []

    def generate(png, n, attempt):
        seen.append(attempt)
        return next(answers), 10

    result = caption_with_retries(generate, b"png", 2, max_attempts=3)
    assert (result.attempts, result.completion_tokens, seen) == (3, 30, [0, 1, 2])
    assert len(result.variants) == 2 and len(result.failures) == 2


def test_retry_loop_gives_up_with_the_last_reason():
    def generate(png, n, attempt):
        return answer(1), 5

    with pytest.raises(CaptionError, match="no valid captions in 2 attempts.*got 1 valid"):
        caption_with_retries(generate, b"png", 2, max_attempts=2, label="The model m.gguf")
