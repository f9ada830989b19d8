"""Paired statistics: intervals, McNemar, the paired bootstrap (items paired by id) and Holm's correction."""

import random
import subprocess
import sys
from pathlib import Path

import pytest

from utils.stats import bootstrap_ci, correct_by_id, holm, holm_comparisons, mcnemar, paired_bootstrap

REPO = Path(__file__).resolve().parent.parent


def _keyed(values, prefix="q"):
    """Results keyed by id, as evaluate_student's prediction rows carry them."""
    return {f"{prefix}{i}": bool(v) for i, v in enumerate(values)}


def _rows(results: dict, seed: int | None = None) -> list[dict]:
    """Prediction rows for ``results``, shuffled when a seed is given."""
    rows = [{"id": k, "prediction": "x", "gold": "x", "correct": v} for k, v in results.items()]
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows


def test_bootstrap_interval_brackets_the_accuracy():
    correct = [True] * 30 + [False] * 70
    lo, hi = bootstrap_ci(correct)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_ci([True] * 10) == (1.0, 1.0)


def test_mcnemar_exact_values():
    # 3 items only a gets right, 1 only b: two-sided exact binomial p = 2 * P(X <= 1 | n=4) = 0.625
    assert mcnemar(_keyed([1, 1, 1, 0, 1]), _keyed([0, 0, 0, 1, 1])) == {"a_only": 3, "b_only": 1, "p_value": 0.625}
    assert mcnemar(_keyed([1, 0]), _keyed([1, 0]))["p_value"] == 1.0
    assert mcnemar(_keyed([1] * 12), _keyed([0] * 12))["p_value"] == pytest.approx(2 / 2**12)


def test_mcnemar_pairs_by_id_not_by_position():
    # Old code paired the i-th result of a with the i-th of b: rows saved in another order
    # paired different items and gave another answer.
    a, b = _keyed([1, 1, 1, 0, 1, 0, 0, 1]), _keyed([0, 0, 1, 1, 1, 0, 1, 1])
    same_order = mcnemar(_rows(a), _rows(b))
    for seed in range(5):
        assert mcnemar(_rows(a, seed), _rows(b, seed + 100)) == same_order
    assert mcnemar(a, dict(reversed(list(b.items())))) == same_order


def test_paired_tests_refuse_different_items_and_unkeyed_lists():
    a = _keyed([1, 0, 1])
    b = {"q0": True, "q1": False, "x9": True}
    with pytest.raises(ValueError, match=r"ids differ.*'q2'.*'x9'"):
        mcnemar(a, b)
    with pytest.raises(ValueError, match="ids differ"):
        paired_bootstrap([a], [b])
    with pytest.raises(ValueError, match="ids differ"):
        paired_bootstrap([a, b], [a, a])  # seeds on one side scored on other items
    with pytest.raises(TypeError, match="keyed by item id"):
        mcnemar([True, False], [True, False])  # positions are not ids
    with pytest.raises(ValueError, match="appears twice"):
        correct_by_id([{"id": 1, "correct": True}, {"id": "1", "correct": False}])


def test_paired_bootstrap_sees_a_real_difference_and_no_difference():
    same = [_keyed([i % 2 == 0 for i in range(100)])]
    result = paired_bootstrap(same, same)
    assert result["difference"] == 0 and result["p_value"] == 1.0
    better = [_keyed([i % 10 != 0 for i in range(100)]) for _ in range(3)]  # 90% on every seed
    worse = [_keyed([i % 2 == 0 for i in range(100)]) for _ in range(3)]  # 50%
    result = paired_bootstrap(better, worse)
    assert result["difference"] == pytest.approx(0.4)
    assert result["p_value"] < 0.01 and result["ci95"][0] > 0.25


def test_paired_bootstrap_does_not_depend_on_row_order():
    rng = random.Random(1)
    a = [_keyed([rng.random() < 0.6 for _ in range(60)]) for _ in range(2)]
    b = [_keyed([rng.random() < 0.5 for _ in range(60)]) for _ in range(2)]
    in_order = paired_bootstrap([_rows(r) for r in a], [_rows(r) for r in b])
    shuffled = paired_bootstrap([_rows(r, 7 + i) for i, r in enumerate(a)], [_rows(r, 70 + i) for i, r in enumerate(b)])
    assert shuffled == in_order


def test_holm_on_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert holm([0.02, 0.015]) == pytest.approx([0.03, 0.03])  # monotone: never below a smaller p's
    assert holm([0.4, 0.3, 0.2]) == pytest.approx([0.6, 0.6, 0.6])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == [] and holm([0.04]) == [0.04]


def test_holm_comparisons_put_an_adjusted_p_beside_each_raw_one():
    rows = [{"variant": "a", "p_value": 0.01, "mcnemar": [{"p_value": 0.02}, {"p_value": 0.5}]},
            {"variant": "b", "p_value": 0.04, "mcnemar": [{"p_value": 0.03}]}]
    out = holm_comparisons(rows)
    assert [r["p_holm"] for r in out] == pytest.approx([0.02, 0.04])
    assert [m["p_holm"] for r in out for m in r["mcnemar"]] == pytest.approx([0.06, 0.5, 0.06])
    assert [r["p_value"] for r in out] == [0.01, 0.04] and "p_holm" not in rows[0], "raw values kept, input untouched"


def test_stats_is_torch_free():
    code = "import sys, utils.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
