"""Paired statistics: intervals, McNemar, the paired bootstrap (items paired by id), Holm's correction, and the
statistics over training runs (hierarchical bootstrap, t over runs, random effects, power, equivalence)."""

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils.stats import (
    bootstrap_ci,
    correct_by_id,
    equivalence,
    hierarchical_bootstrap,
    holm,
    holm_comparisons,
    mcnemar,
    mde_over_runs,
    paired_bootstrap,
    paired_difference_variance,
    per_run_differences,
    power_over_runs,
    random_effects,
    t_over_runs,
    tost_over_runs,
)

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
    rows = [
        {"variant": "a", "p_value": 0.01, "mcnemar": [{"p_value": 0.02}, {"p_value": 0.5}]},
        {"variant": "b", "p_value": 0.04, "mcnemar": [{"p_value": 0.03}]},
    ]
    out = holm_comparisons(rows)
    assert [r["p_holm"] for r in out] == pytest.approx([0.02, 0.04])
    assert [m["p_holm"] for r in out for m in r["mcnemar"]] == pytest.approx([0.06, 0.5, 0.06])
    assert [r["p_value"] for r in out] == [0.01, 0.04] and "p_holm" not in rows[0], "raw values kept, input untouched"


def test_stats_is_torch_free():
    code = "import sys, utils.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_paired_bootstrap_p_is_never_zero():
    # Every resample favours a: the old p was 0, which no finite resample can show.
    result = paired_bootstrap([_keyed([1] * 50)], [_keyed([0] * 50)], n_boot=999)
    assert result["p_value"] == pytest.approx(2 / 1000)


# --- over training runs ----------------------------------------------------------------------------


def _run(n: int, a_only: int, b_only: int, both: int = 0, prefix: str = "q") -> tuple[dict, dict]:
    """One run's two sides on ``n`` items with the given McNemar counts (and ``both`` right on both)."""
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * (n - a_only - b_only - both)
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * (n - a_only - b_only - both)
    return _keyed(a, prefix), _keyed(b, prefix)


def _runs(counts: dict, n: int = 200) -> tuple[dict, dict]:
    """``{key: (a_only, b_only)}`` as the two sides' runs, each run on its own ``n`` items."""
    pairs = {key: _run(n, *c, both=n // 2, prefix=f"{key}-") for key, c in counts.items()}
    return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}


def test_per_run_differences_pair_runs_by_key_and_items_by_id():
    a, b = _runs({2: (30, 10), 0: (12, 20), 10: (5, 5)})
    a[0] = _rows(a[0], seed=3)  # prediction rows in another order pair the same items
    rows = per_run_differences(a, b)
    assert [r["run"] for r in rows] == [0, 2, 10], "numeric order, not 0, 10, 2"
    assert rows[1]["accuracy_a"] == pytest.approx(0.65) and rows[1]["accuracy_b"] == pytest.approx(0.55)
    assert [r["difference"] for r in rows] == pytest.approx([-0.04, 0.10, 0.0])
    assert rows[1]["n"] == 200 and rows[1]["mcnemar"] == mcnemar(*_run(200, 30, 10, both=100))


def test_per_run_differences_refuse_unpaired_runs_and_items():
    a, b = _runs({0: (3, 1), 1: (2, 2), "fold-x": (1, 0)})
    with pytest.raises(ValueError, match=r"run 'fold-x' only in the first"):
        per_run_differences(a, {k: v for k, v in b.items() if k != "fold-x"})
    with pytest.raises(ValueError, match=r"run 7 only in the second"):
        per_run_differences(a, {**b, 7: b[0]})
    with pytest.raises(ValueError, match=r"both sides of run 1: ids differ"):
        per_run_differences(a, {**b, 1: b[0]})  # run 1 of b scored on run 0's items
    with pytest.raises(ValueError, match="at least one run"):
        hierarchical_bootstrap({}, {})


def test_t_over_runs_matches_a_hand_calculation():
    # e-SNLI-like per-seed differences. Mean 0.085333; deviations -0.021333, -0.035333, +0.056667,
    # squares summing to 0.0049147, so sd = sqrt(0.0049147 / 2) = 0.049571 and se = sd / sqrt(3).
    # With 2 df Student's t has closed forms: the 97.5 % quantile is sqrt(2 * 0.95**2 / (1 - 0.95**2))
    # = 4.302653, and P(T > t) = (1 - t / sqrt(2 + t**2)) / 2.
    result = t_over_runs([0.064, 0.050, 0.142])
    se = 0.049571497 / np.sqrt(3)
    t = 0.0853333 / se
    assert result["mean"] == pytest.approx(0.0853333, abs=1e-6) and result["sd"] == pytest.approx(0.049571497)
    assert result["k"] == 3 and result["df"] == 2
    assert result["ci"] == pytest.approx((0.0853333 - 4.302653 * se, 0.0853333 + 4.302653 * se), abs=1e-6)
    assert result["p_value"] == pytest.approx(1 - t / np.sqrt(2 + t**2), rel=1e-5)
    rows = [{"difference": d} for d in (0.064, 0.050, 0.142)]
    assert t_over_runs(rows) == result, "rows of per_run_differences give the same"
    one = t_over_runs([0.05])
    assert one["mean"] == 0.05 and one["ci"] is None and one["p_value"] is None and one["sd"] is None


def test_hierarchical_bootstrap_p_is_never_zero_and_sees_no_difference():
    a, b = _runs({seed: (80, 0) for seed in range(3)})  # a right on 80 items b misses, in every run
    result = hierarchical_bootstrap(a, b, n_boot=999)
    assert result["difference"] == pytest.approx(0.4) and result["p_value"] == pytest.approx(2 / 1000)
    assert result["n_runs"] == 3 and result["n_boot"] == 999
    same = hierarchical_bootstrap(a, a, n_boot=500)
    assert same["difference"] == 0 and same["ci"] == (0, 0) and same["p_value"] == 1.0


def test_hierarchical_bootstrap_counts_run_to_run_variation():
    # Five seeds that disagree (+9.0, -16.5, +8.5, -1.5, +7.0 points): items alone say little doubt
    # about each run, but the runs' spread makes the mean (+1.3 points) far from significant.
    a, b = _runs({0: (34, 16), 1: (10, 43), 2: (33, 16), 3: (24, 27), 4: (32, 18)})
    hier = hierarchical_bootstrap(a, b)
    assert hier["difference"] == pytest.approx(0.013)
    t = t_over_runs(per_run_differences(a, b))
    lo, hi = hier["ci"]
    assert lo < -0.10 and hi > 0.10 and hier["p_value"] > 0.5
    assert (hi - lo) == pytest.approx(t["ci"][1] - t["ci"][0], rel=0.25), "about as wide as the t interval"
    # Five folds on different items, given in another key and row order: the same answer.
    shuffled = {k: _rows(a[k], seed=k) for k in reversed(list(a))}
    assert hierarchical_bootstrap(shuffled, b) == hier
    assert hierarchical_bootstrap(a, b, seed=1)["ci"] != hier["ci"], "the seed drives the resampling"


def test_hierarchical_bootstrap_with_one_run_resamples_items_only():
    a, b = _runs({0: (30, 10)})
    result = hierarchical_bootstrap(a, b)
    assert result["n_runs"] == 1 and result["small_sample"] is False
    # a single run's item interval: the difference +/- about 1.96 * sqrt(paired_difference_variance)
    half = 1.96 * np.sqrt(paired_difference_variance(30, 10, 200))
    assert result["ci"] == pytest.approx((0.1 - half, 0.1 + half), abs=0.01)


def _study(rng: np.random.Generator, k: int, n: int = 250, d: float = 0.03, run_sd: float = 0.05):
    """One simulated study: ``k`` training runs of two recipes on one test set of ``n`` items.

    Run r's true difference is ``d + u_r`` with ``u_r ~ Normal(0, run_sd)``; its two sides' accuracies
    are 0.7 +/- half of that. Items are drawn afresh in every run; a and b share the draw of an
    item 60 % of the time (an easy item is easy for both), as real models' answers correlate."""
    ids = [f"q{i}" for i in range(n)]
    a_runs, b_runs = {}, {}
    for run in range(k):
        delta = d + rng.normal(0, run_sd)
        u_a = rng.random(n)
        u_b = np.where(rng.random(n) < 0.6, u_a, rng.random(n))
        a_runs[run] = dict(zip(ids, (u_a < 0.7 + delta / 2).tolist()))
        b_runs[run] = dict(zip(ids, (u_b < 0.7 - delta / 2).tolist()))
    return a_runs, b_runs


def _coverage(k: int, studies: int, seed: int, small_sample: bool = True) -> float:
    """The share of simulated studies whose hierarchical 95 % interval covers the true 0.03."""
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(studies):
        lo, hi = hierarchical_bootstrap(*_study(rng, k), n_boot=400, seed=i, small_sample=small_sample)["ci"]
        hits += lo <= 0.03 <= hi
    return hits / studies


@pytest.mark.parametrize("k", [3, 5])
def test_hierarchical_interval_covers_the_true_difference(k):
    # Measured with these seeds: 94.5 % at k = 3, 93.75 % at k = 5 (over 2,000 studies with other
    # seeds: 94.65 % and 95.05 %). 400 studies give a Monte-Carlo sd of 1.1 points at 95 %: the bounds
    # lie 4 and 3 sd away, and a plain run bootstrap (86-87 % at k = 3) falls outside.
    assert 0.905 <= _coverage(k, 400, seed=k) <= 0.985


def test_plain_run_bootstrap_under_covers_with_three_runs():
    # The reason for the small-sample correction: without it 3 runs covered in 86.75 % of these 400
    # studies (86.0 % of 2,000 others); 5 runs in 90.25 % (92.05 %).
    assert _coverage(3, 400, seed=3, small_sample=False) < 0.905


def test_item_only_interval_misses_run_to_run_variation():
    # paired_bootstrap averages seeds per item and resamples items: it treats the trained models as
    # the truth and covers far less often. Measured: 64.0 % of these 150 studies at k = 5 (69.3 % at
    # k = 3); the bound lies 3.5 Monte-Carlo sd above.
    rng = np.random.default_rng(5)
    hits = 0
    for i in range(150):
        a, b = _study(rng, 5)
        lo, hi = paired_bootstrap(list(a.values()), list(b.values()), n_boot=200, seed=i)["ci95"]
        hits += lo <= 0.03 <= hi
    assert hits / 150 < 0.78


def test_paired_difference_variance_is_the_variance_of_the_mean_item_difference():
    # 30 items only a, 10 only b of 200: 40 / 200**2 - 20**2 / 200**3 = 0.001 - 0.00005
    assert paired_difference_variance(30, 10, 200) == pytest.approx(0.00095)
    item = np.array([1] * 30 + [-1] * 10 + [0] * 160)
    assert paired_difference_variance(30, 10, 200) == pytest.approx(item.var() / 200)
    with pytest.raises(ValueError):
        paired_difference_variance(150, 60, 200)


def test_random_effects_on_a_hand_computed_example():
    # Weights 1/v = 1000, 500, 250 (sum 1750). Fixed effect (0 + 50 + 75) / 1750 = 0.0714286, se sqrt(1/1750).
    # Q = 1000 * 0.0714286**2 + 500 * 0.0285714**2 + 250 * 0.2285714**2 = 18.5714 on 2 df, whose
    # chi-square tail is exp(-Q / 2). C = 1750 - (1000**2 + 500**2 + 250**2) / 1750 = 1000, so
    # tau^2 = (18.5714 - 2) / 1000 = 0.0165714 and I^2 = (Q - 2) / Q = 0.892308. Random-effects weights
    # 1 / (v + tau^2) = 56.911, 53.846, 48.611 give 0.125295; the HKSJ factor
    # sum w (d - 0.125295)^2 / 2 = 1.2058 (above 1, kept) makes se = sqrt(1.2058 / 159.368) = 0.086983,
    # and the interval 0.125295 +/- 4.302653 * se (t, 2 df).
    result = random_effects([0.0, 0.1, 0.3], [0.001, 0.002, 0.004])
    assert result["fixed"]["estimate"] == pytest.approx(0.0714286, abs=1e-6)
    assert result["fixed"]["se"] == pytest.approx(np.sqrt(1 / 1750))
    assert result["q"] == pytest.approx(18.571429) and result["q_df"] == 2
    assert result["q_p_value"] == pytest.approx(np.exp(-18.571429 / 2))
    assert result["tau2"] == pytest.approx(0.0165714, abs=1e-7) and result["i2"] == pytest.approx(0.892308, abs=1e-6)
    assert result["estimate"] == pytest.approx(0.125295, abs=1e-6) and result["se"] == pytest.approx(0.086983, abs=1e-6)
    assert result["ci"] == pytest.approx((0.125295 - 4.302653 * 0.086983, 0.125295 + 4.302653 * 0.086983), abs=1e-5)
    # Agreeing runs: Q below its df, tau^2 = 0, and the HKSJ factor held at 1 gives the fixed-effect se.
    calm = random_effects([0.05, 0.06], [0.001, 0.001])
    assert calm["tau2"] == 0 and calm["i2"] == 0 and calm["se"] == pytest.approx(np.sqrt(0.0005))
    with pytest.raises(ValueError, match="positive"):
        random_effects([0.0, 0.1], [0.0, 0.001])


def test_random_effects_flag_runs_that_disagree():
    counts = {0: (34, 16), 1: (10, 43), 2: (33, 16), 3: (24, 27), 4: (32, 18)}  # +9.0, -16.5, +8.5, -1.5, +7.0
    rows = per_run_differences(*_runs(counts))
    variances = [paired_difference_variance(r["mcnemar"]["a_only"], r["mcnemar"]["b_only"], r["n"]) for r in rows]
    result = random_effects(rows, variances)
    assert result["q"] > 30 and result["q_p_value"] < 1e-5 and result["i2"] > 0.85
    assert result["ci"][0] < 0 < result["ci"][1] and result["p_value"] > 0.5
    fixed = result["fixed"]
    assert fixed["ci"][1] - fixed["ci"][0] < (result["ci"][1] - result["ci"][0]) / 3, "fixed effect ignores the spread"
    assert random_effects([0.05], [0.001])["ci"] is None


def test_power_and_minimum_detectable_effect_over_runs():
    sd = 0.05
    for k in (3, 5, 10):
        mde = mde_over_runs(sd, k)
        assert power_over_runs(mde, sd, k) == pytest.approx(0.8, abs=1e-9)
        assert mde > 2.8016 * sd / np.sqrt(k), "above the normal approximation: t with few df is wider"
    assert power_over_runs(0.0, sd, 5) == pytest.approx(0.05)
    assert mde_over_runs(sd, 3) > mde_over_runs(sd, 5) > mde_over_runs(sd, 10)
    # Against a simulation of 20,000 studies of 5 runs with a true 6-point difference.
    rng = np.random.default_rng(0)
    runs = rng.normal(0.06, sd, size=(20_000, 5))
    t = runs.mean(axis=1) / (runs.std(axis=1, ddof=1) / np.sqrt(5))
    assert power_over_runs(0.06, sd, 5) == pytest.approx((np.abs(t) > 2.776445).mean(), abs=0.015)
    with pytest.raises(ValueError, match="at least 2 runs"):
        power_over_runs(0.05, sd, 1)


def test_tost_verdicts_on_clear_cases():
    assert tost_over_runs([0.001, -0.002, 0.0, 0.002, -0.001], margin=0.02)["verdict"] == "equivalent"
    assert tost_over_runs([-0.10, -0.12, -0.11], margin=0.02)["verdict"] == "below"
    assert tost_over_runs([0.10, 0.12, 0.11], margin=0.02)["verdict"] == "above"
    assert tost_over_runs([0.05, -0.04, 0.10], margin=0.02)["verdict"] == "inconclusive"
    assert tost_over_runs([0.01], margin=0.02)["verdict"] == "inconclusive"
    # p_TOST < 0.05 exactly when the 90 % t interval lies inside the margins
    rng = np.random.default_rng(1)
    for _ in range(50):
        r = tost_over_runs(rng.normal(0, 0.02, size=4).tolist(), margin=0.03)
        assert (r["p_tost"] < 0.05) == (-0.03 < r["ci90"][0] and r["ci90"][1] < 0.03)


def test_equivalence_answers_from_runs_and_from_the_bootstrap():
    level = _runs({seed: (20 + seed, 20 - seed) for seed in range(5)}, n=1000)  # 0, 0.2, ..., 0.8 points
    result = equivalence(*level, margin=0.05)
    assert result["difference"] == pytest.approx(0.004) and result["n_runs"] == 5
    assert result["runs"]["verdict"] == "equivalent" and result["bootstrap"]["verdict"] == "equivalent"
    # A margin of 0.5 points is smaller than the 90 % interval; the 95 % one still lies above 0.
    tight = equivalence(*level, margin=0.005)
    assert tight["runs"]["verdict"] == "above" and tight["bootstrap"]["verdict"] == "above"
    spread = _runs({0: (34, 16), 1: (10, 43), 2: (33, 16), 3: (24, 27), 4: (32, 18)})  # +9.0 ... +7.0 points
    result = equivalence(*spread, margin=0.02)
    assert result["runs"]["verdict"] == "inconclusive" and result["bootstrap"]["verdict"] == "inconclusive"
    worse = _runs({seed: (5, 60 + 5 * seed) for seed in range(4)})
    result = equivalence(*worse, margin=0.02)
    assert result["runs"]["verdict"] == "below" and result["bootstrap"]["verdict"] == "below"
    assert result["bootstrap"]["ci95"] == hierarchical_bootstrap(*worse)["ci"], "the headline replicates"
    with pytest.raises(ValueError, match="margin must be positive"):
        equivalence(*worse, margin=0)
