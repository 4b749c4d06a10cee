"""The real sentence-transformers embedder (all-MiniLM-L6-v2, offline) and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from tilescribe.plugin.core.captions import CaptionVariant
from tilescribe.plugin.core.embedding import SentenceTransformerEmbedder
from tilescribe.plugin.core.errors import ModelError


def test_default_model_gives_normalised_384_d_vectors(minilm):
    vectors = minilm.embed(["a farm", "an airport runway", "cropland with fields"])
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Meaning, not words: farmland is nearer cropland than a runway.
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]


def test_empty_batch_gives_no_rows(minilm):
    assert minilm.embed([]).shape == (0, 384)


def test_structured_variant_text_follows_the_paper():
    variant = CaptionVariant("A farm.", "fields in the north", "A farm with fields.")
    assert variant.embedding_text() == (
        "ONE_SENTENCE: A farm.\nFEATURE: fields in the north\nCAPTION: A farm with fields.")
    assert CaptionVariant.plain(" a farm ").embedding_text() == "a farm"


def test_missing_model_folder_names_it(tmp_path):
    with pytest.raises(ModelError, match="not found.*nope"):
        SentenceTransformerEmbedder(tmp_path / "nope")


@pytest.mark.slow  # imports sentence-transformers (torch): ~5 s before anything is tested
def test_folder_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ModelError, match="Cannot load the embedding model"):
        SentenceTransformerEmbedder(tmp_path)
