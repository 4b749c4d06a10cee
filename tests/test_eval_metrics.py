"""R@K, tie rules, rank files and run comparison on hand-made cases whose ranks are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tilescribe.plugin.core.evaluation import (
    EvaluationError,
    Query,
    compare_runs,
    evaluate_rankings,
    evaluate_scores,
    format_comparison,
    pick_run,
    ranks_from_rankings,
    ranks_from_scores,
    read_rank_file,
    recall_at,
    write_rank_file,
)

# Rows are queries, columns images; TARGETS[q] is the image query q describes.
SCORES = np.array([
    [0.9, 0.5, 0.1],  # image 0 best alone                 -> rank 1
    [0.7, 0.7, 0.2],  # image 1 tied with image 0          -> 2 pessimistic, 1 optimistic
    [0.3, 0.3, 0.3],  # three-way tie                      -> 3 pessimistic, 1 optimistic
    [0.8, 0.6, 0.1],  # image 2 last                       -> 3 either way
])
TARGETS = [0, 1, 2, 2]
QUERIES = tuple(Query(f"q{n}", f"text {n}", target) for n, target in enumerate(TARGETS))
IMAGES = ("img0", "img1", "img2")


def test_ties_count_against_the_true_image_by_default():
    assert ranks_from_scores(SCORES, TARGETS).tolist() == [1, 2, 3, 3]


def test_optimistic_ties_count_for_the_true_image():
    assert ranks_from_scores(SCORES, TARGETS, optimistic=True).tolist() == [1, 1, 1, 3]


def test_scores_closer_than_float_noise_are_ties():
    scores = np.array([[0.5 + 1e-8, 0.5], [0.501, 0.5]])
    assert ranks_from_scores(scores, [1, 1]).tolist() == [2, 2]
    assert ranks_from_scores(scores, [1, 1], optimistic=True).tolist() == [1, 2]


def test_recall_at_k_is_the_share_of_queries_in_the_top_k():
    ranks = np.array([1, 2, 5, 6, 10, 11, 100, 1, 3, 20])
    values = recall_at(ranks)
    assert values["R@1"] == pytest.approx(20.0)
    assert values["R@5"] == pytest.approx(50.0)
    assert values["R@10"] == pytest.approx(70.0)
    assert values["mR"] == pytest.approx((20 + 50 + 70) / 3)


def test_recall_of_no_queries_is_an_error():
    with pytest.raises(EvaluationError, match="no captions"):
        recall_at(np.array([], dtype=int))


def test_evaluate_scores_keeps_both_tie_rules():
    run = evaluate_scores(SCORES, QUERIES, IMAGES, name="toy", label="proxy", config={"k": 1})
    assert run.ranks.tolist() == [1, 2, 3, 3]
    assert run.recalls()["R@1"] == pytest.approx(25.0)
    assert run.recalls(optimistic=True)["R@1"] == pytest.approx(75.0)
    assert run.label == "proxy" and run.config == {"k": 1}


def test_score_matrix_of_the_wrong_shape_is_refused():
    with pytest.raises(EvaluationError, match="expected 4 queries x 3 images"):
        evaluate_scores(SCORES[:, :2], QUERIES, IMAGES, name="x", label="proxy", config={})
    with pytest.raises(EvaluationError, match="outside the 3 images"):
        ranks_from_scores(SCORES, [0, 1, 2, 3])


def test_ranked_lists_give_the_position_or_the_worst_rank_when_missing():
    rankings = [[2, 0, 1], [1], [0, 1]]
    assert ranks_from_rankings(rankings, [0, 1, 2], n_images=3).tolist() == [2, 1, 3]
    run = evaluate_rankings(rankings, QUERIES[:3], IMAGES, name="search", label="end-to-end", config={})
    assert run.ranks.tolist() == run.optimistic_ranks.tolist() == [2, 1, 3]


def _runs():
    before = evaluate_scores(SCORES, QUERIES, IMAGES, name="before", label="proxy", config={})
    better = SCORES.copy()
    better[1, 1] = 0.95  # query 1 now ranks its image first
    better[0, 0] = 0.0  # query 0 drops to last
    after = evaluate_scores(better, QUERIES, IMAGES, name="after", label="proxy", config={})
    return before, after


def test_rank_file_round_trip_and_query_by_query_comparison(tmp_path):
    path = tmp_path / "ranks.json"
    write_rank_file(path, _runs(), "toy")
    data = json.loads(path.read_text())
    assert data["label"] == "proxy" and data["queries"][1] == {"id": "q1", "text": "text 1", "image": "img1"}
    runs = read_rank_file(path)
    comparison = compare_runs(pick_run(runs, "before", path), pick_run(runs, "after", path))
    assert [(c.query_id, c.before, c.after) for c in comparison.better] == [("q1", 2, 1)]
    assert [(c.query_id, c.before, c.after) for c in comparison.worse] == [("q0", 1, 3)]
    assert comparison.unchanged == 2
    text = format_comparison(comparison)
    assert "1 queries better, 1 worse, 2 unchanged" in text and "q0" in text and "text 1" in text


def test_comparison_needs_the_same_queries(tmp_path):
    before, after = _runs()
    write_rank_file(tmp_path / "a.json", [before], "toy")
    other = evaluate_scores(SCORES[:3], QUERIES[:3], IMAGES, name="short", label="proxy", config={})
    write_rank_file(tmp_path / "b.json", [other], "toy")
    with pytest.raises(EvaluationError, match="different queries"):
        compare_runs(read_rank_file(tmp_path / "a.json")[0], read_rank_file(tmp_path / "b.json")[0])


def test_rank_file_errors_name_the_file(tmp_path):
    with pytest.raises(EvaluationError, match="not found: .*missing.json"):
        read_rank_file(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"images": []}')
    with pytest.raises(EvaluationError, match="other.json is not a rank file"):
        read_rank_file(tmp_path / "other.json")
    write_rank_file(tmp_path / "r.json", _runs(), "toy")
    with pytest.raises(EvaluationError, match="No run named 'nope' .* 'before', 'after'"):
        pick_run(read_rank_file(tmp_path / "r.json"), "nope", tmp_path / "r.json")


def test_comparison_lists_moves_near_the_top_first():
    from tilescribe.plugin.core.evaluation.ranks import RankedRun

    ids, texts = ("a", "b", "c", "d"), ("ta", "tb", "tc", "td")
    before = RankedRun("before", "proxy", ids, texts, np.array([50, 3, 9, 1]))
    after = RankedRun("after", "proxy", ids, texts, np.array([2, 1, 1, 40]))
    comparison = compare_runs(before, after)
    # c and b both reach rank 1; c jumped further, so it comes first; a ends at 2.
    assert [c.query_id for c in comparison.better] == ["c", "b", "a"]
    assert [c.query_id for c in comparison.worse] == ["d"]
