"""Statistics for comparing models on the same test items: intervals, paired tests, Holm's correction,
and statistics over training runs (seeds or folds), the unit of replication of a claim about a recipe.

Torch-free, so the report reads and recomputes them without loading a model. A paired test pairs
two systems' results *by item id*: each side is a mapping ``id -> correct`` (or a list of
prediction rows with ``"id"`` and ``"correct"``, as ``utils.evaluation.evaluate_student`` writes
them), both sides must hold exactly the same ids, and the order in which they come never matters.
Over runs, each side is a mapping ``run key -> results``, and runs pair by key.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

Results = Mapping | Iterable  # id -> correct, or prediction rows with "id" and "correct"


def bootstrap_ci(correct: list[bool], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval for an accuracy."""
    if not correct:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(correct)
    stats = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    lo = stats[int((1 - level) / 2 * n_boot)]
    hi = stats[min(n_boot - 1, int((1 + level) / 2 * n_boot))]
    return (lo, hi)


# --- pairing by id -------------------------------------------------------------------------------


def correct_by_id(results: Results) -> dict[str, bool]:
    """Per-item results as ``{id: correct}`` (ids as strings), from a mapping or prediction rows.

    A plain list of booleans is refused: its items have no ids, so it cannot be paired safely.
    """
    if isinstance(results, Mapping):
        return {str(k): bool(v) for k, v in results.items()}
    out: dict[str, bool] = {}
    for row in results:
        if not isinstance(row, Mapping) or "id" not in row:
            raise TypeError(
                "Paired statistics need results keyed by item id: a dict id -> correct, or prediction "
                f"rows with 'id' and 'correct' (got an item {row!r})."
            )
        key = str(row["id"])
        if key in out:
            raise ValueError(f"Item id {key!r} appears twice in one set of results.")
        out[key] = bool(row["correct"])
    return out


def _few(ids: Iterable[str], k: int = 5) -> str:
    ordered = sorted(ids)
    return ", ".join(repr(i) for i in ordered[:k]) + (f" and {len(ordered) - k} more" if len(ordered) > k else "")


def check_same_ids(a: Mapping, b: Mapping, what: str = "the two sides") -> None:
    """Raise ``ValueError`` naming a few ids when ``a`` and ``b`` do not cover exactly the same items."""
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    if only_a or only_b:
        parts = [
            f"{len(only_a)} only in the first ({_few(only_a)})" if only_a else "",
            f"{len(only_b)} only in the second ({_few(only_b)})" if only_b else "",
        ]
        raise ValueError(
            f"A paired test needs the same items on {what}: ids differ, " + "; ".join(p for p in parts if p) + "."
        )


def paired_by_id(a: Results, b: Results) -> tuple[list[str], list[bool], list[bool]]:
    """The common ids (sorted, so the result never depends on input order) and both sides' results
    in that order; raises ``ValueError`` when the id sets differ."""
    a, b = correct_by_id(a), correct_by_id(b)
    check_same_ids(a, b)
    ids = sorted(a)
    return ids, [a[i] for i in ids], [b[i] for i in ids]


# --- paired tests --------------------------------------------------------------------------------


def mcnemar(a: Results, b: Results) -> dict:
    """Exact (binomial) McNemar test of two systems on the same items, paired by id.

    ``a_only``: items only ``a`` gets right; ``b_only``: only ``b``. Two-sided p-value.
    """
    _, xs, ys = paired_by_id(a, b)
    a_only = sum(1 for x, y in zip(xs, ys) if x and not y)
    b_only = sum(1 for x, y in zip(xs, ys) if y and not x)
    n = a_only + b_only
    k = min(a_only, b_only)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": p}


def paired_bootstrap(a: list[Results], b: list[Results], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over test items of ``mean accuracy(a) - mean accuracy(b)``.

    ``a`` and ``b`` hold one set of per-item results per seed, each keyed by item id; every set on
    both sides must cover the same ids. Each item's result is averaged over the seeds of its side,
    and only the items are resampled: the trained models are taken as fixed, so the interval counts
    the sampling of test items but not run-to-run variation (another seed's model differs by
    several points). For a claim about the recipe rather than these models, use
    ``hierarchical_bootstrap`` or ``t_over_runs``, which treat the training run as the unit.
    Returns the difference, its 95% interval and a two-sided p-value: twice the smaller share of
    resampled differences on either side of zero, counted as ``(1 + count) / (n_boot + 1)`` so that
    it is never 0 (no finite resample can show a p below that).
    """
    if not a or not b:
        raise ValueError("paired_bootstrap needs at least one seed on each side.")
    runs_a, runs_b = [correct_by_id(r) for r in a], [correct_by_id(r) for r in b]
    for run in runs_a[1:] + runs_b:
        check_same_ids(runs_a[0], run, "every seed of both sides")
    ids = sorted(runs_a[0])  # a fixed order of items, so the resampling does not depend on input order
    n = len(ids)
    if not n:
        raise ValueError("paired_bootstrap needs at least one test item.")
    score_a = [sum(run[i] for run in runs_a) / len(runs_a) for i in ids]  # per item: share of seeds right
    score_b = [sum(run[i] for run in runs_b) / len(runs_b) for i in ids]
    diff = [x - y for x, y in zip(score_a, score_b)]
    observed = sum(diff) / n
    rng = random.Random(seed)
    stats = sorted(sum(diff[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    below = (1 + sum(1 for s in stats if s <= 0)) / (n_boot + 1)
    above = (1 + sum(1 for s in stats if s >= 0)) / (n_boot + 1)
    return {
        "difference": observed,
        "ci95": (stats[int(0.025 * n_boot)], stats[min(n_boot - 1, int(0.975 * n_boot))]),
        "p_value": min(1.0, 2 * min(below, above)),
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment for a family of tests, in the order given.

    The i-th smallest of m p-values is multiplied by (m - i + 1), capped at 1, and made monotone
    (never below an adjusted p of a smaller raw p). It controls the family-wise error rate like
    Bonferroni, and rejects at least as often. ``holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]``.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_comparisons(comparisons: list[dict]) -> list[dict]:
    """Copies of comparison rows (``utils.sweep.compare_to_baseline``) with ``p_holm`` beside each
    raw ``p_value``: the bootstrap p-values adjusted over all rows (one family: every variant,
    inference method and data share against the same baseline), and each McNemar p-value over
    all McNemar tests of the rows."""
    boot = holm([c["p_value"] for c in comparisons])
    tests = iter(holm([m["p_value"] for c in comparisons for m in c.get("mcnemar", [])]))
    return [
        {**c, "p_holm": p, "mcnemar": [{**m, "p_holm": next(tests)} for m in c.get("mcnemar", [])]}
        for c, p in zip(comparisons, boot)
    ]


# --- power -----------------------------------------------------------------------------------------


def p_text(p: float) -> str:
    """A p-value in a table cell: ``0.163`` or ``<0.001``."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_in_sentence(p: float) -> str:
    """A p-value in a sentence: ``= 0.163`` or ``< 0.001``."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _discordant_share(discordant: int, n: int, caller: str) -> float:
    """The discordant share of a paired design, or a clear error; no discordance at all counts as
    one item differing."""
    if n <= 0:
        raise ValueError(f"{caller} needs at least one item.")
    if not 0 <= discordant <= n:
        raise ValueError(f"discordant must lie in [0, n={n}], got {discordant}.")
    return max(discordant, 1) / n


def minimum_detectable_effect(discordant: int, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference a paired design on ``n`` items detects with probability
    ``power`` at two-sided level ``alpha``, given ``discordant`` items on which the two systems
    disagree (McNemar's b + c, the observed discordance).

    Connor's (1987) sample size for paired proportions, solved for the difference d:
    ``n = (z_a * sqrt(p) + z_b * sqrt(p - d**2))**2 / d**2`` with ``p`` the discordant share; the
    left side falls as d grows, so d is found by bisection. More disagreement, or fewer items,
    means a larger detectable difference.
    """
    from statistics import NormalDist

    share = _discordant_share(discordant, n, "minimum_detectable_effect")
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)

    def needed(d: float) -> float:
        return (z_a * math.sqrt(share) + z_b * math.sqrt(max(share - d * d, 0.0))) ** 2 / (d * d)

    low, high = 1e-9, math.sqrt(share)
    if needed(high) > n:  # even the largest difference the discordance allows is not detectable
        return high
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if needed(mid) > n else (low, mid)
    return high


def power_against(difference: float, discordant: int, n: int, alpha: float = 0.05) -> float:
    """The probability that the paired design of ``minimum_detectable_effect`` (``n`` items,
    ``discordant`` of them with the two systems disagreeing) finds a true accuracy difference of
    ``difference`` significant at two-sided level ``alpha``: Connor's (1987) formula solved for the
    power instead of the difference, so ``power_against(minimum_detectable_effect(b, n), b, n)`` is 0.8.
    The far tail is ignored, as in Connor's formula."""
    from statistics import NormalDist

    share, d = _discordant_share(discordant, n, "power_against"), abs(difference)
    if d * d >= share:  # the discordance cannot hold a difference this large: it would always show
        return 1.0
    z_a = NormalDist().inv_cdf(1 - alpha / 2)
    return NormalDist().cdf((d * math.sqrt(n) - z_a * math.sqrt(share)) / math.sqrt(share - d * d))


# --- over training runs --------------------------------------------------------------------------
# Two training runs (seeds) of one recipe differ by several points, so a claim about a recipe is a
# claim over runs: the run is the unit of replication, and the test items are sampled within it.

RunKey = int | str
Runs = Mapping[RunKey, Results]  # run key (seed or fold) -> that run's per-item results


def _run_order(key: RunKey) -> tuple[bool, RunKey]:
    """Sort key for run keys: integers in numeric order, then strings; a mix of both never raises."""
    return (isinstance(key, str), key)


def _paired_runs(a_runs: Runs, b_runs: Runs) -> list[tuple[RunKey, dict[str, bool], dict[str, bool]]]:
    """Both sides' runs paired by key, in key order, each run's two sides checked to hold the same ids."""
    if not a_runs or not b_runs:
        raise ValueError("Statistics over runs need at least one run (seed or fold) on each side.")
    only_a, only_b = set(a_runs) - set(b_runs), set(b_runs) - set(a_runs)
    if only_a or only_b:
        named = [
            f"{', '.join(map(repr, sorted(keys, key=_run_order)))} only in the {side}"
            for keys, side in ((only_a, "first"), (only_b, "second"))
            if keys
        ]
        raise ValueError(
            "Runs are paired by key (one seed or fold trains and tests both sides): run "
            + "; ".join(named)
            + ". Run the missing ones, or leave them out on both sides."
        )
    pairs = []
    for key in sorted(a_runs, key=_run_order):
        a, b = correct_by_id(a_runs[key]), correct_by_id(b_runs[key])
        check_same_ids(a, b, f"both sides of run {key!r}")
        if not a:
            raise ValueError(f"Run {key!r} has no test items.")
        pairs.append((key, a, b))
    return pairs


def per_run_differences(a_runs: Runs, b_runs: Runs) -> list[dict]:
    """Per training run: both sides' accuracies, their difference and the exact McNemar test.

    ``a_runs`` and ``b_runs`` map a run key (a seed or a fold, int or str) to that run's results
    (``{id: correct}`` or prediction rows). Runs pair by key, items by id within a run; a key on
    one side only, or a run whose two sides hold different ids, is a ``ValueError``. Different
    runs may hold different items (cross-validation folds) or the same ones (seeds on one test set).

    Returns one row per run, in key order: ``run``, ``accuracy_a``, ``accuracy_b``, ``difference``
    (a - b), ``n`` (items) and ``mcnemar`` (``a_only``, ``b_only``, ``p_value``).
    """
    rows = []
    for key, a, b in _paired_runs(a_runs, b_runs):
        n = len(a)
        acc_a, acc_b = sum(a.values()) / n, sum(b.values()) / n
        rows.append(
            {
                "run": key,
                "accuracy_a": acc_a,
                "accuracy_b": acc_b,
                "difference": acc_a - acc_b,
                "n": n,
                "mcnemar": mcnemar(a, b),
            }
        )
    return rows


def _differences(differences: Sequence[float] | Sequence[Mapping]) -> np.ndarray:
    """Per-run differences as an array, from numbers or from rows of ``per_run_differences``."""
    return np.array([d["difference"] if isinstance(d, Mapping) else d for d in differences], dtype=float)


def t_over_runs(differences: Sequence[float] | Sequence[Mapping], level: float = 0.95) -> dict:
    """One-sample t interval and test of the mean per-run difference, with the run as the unit.

    ``differences`` are per-run differences (numbers, or the rows of ``per_run_differences``).
    Each already holds its run's item noise, so their spread is the whole run-to-run variation
    and the t interval with k - 1 degrees of freedom is exact for normal differences, however
    few the runs.

    Returns ``mean``, ``ci`` (at ``level``), ``level``, ``p_value`` (two-sided, against 0), ``sd``,
    ``se``, ``k`` and ``df``. With one run nothing measures the run-to-run spread: ``ci``,
    ``p_value``, ``sd`` and ``se`` are ``None``. With k runs all equal the interval is a point and
    p is 0 or 1.
    """
    from scipy import stats

    d = _differences(differences)
    k = len(d)
    if not k:
        raise ValueError("t_over_runs needs at least one run's difference.")
    mean = float(d.mean())
    out = {"mean": mean, "ci": None, "level": level, "p_value": None, "sd": None, "se": None, "k": k, "df": k - 1}
    if k < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(k)
    half = float(stats.t.ppf((1 + level) / 2, k - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, k - 1)) if se > 0 else float(mean == 0)
    return {**out, "ci": (mean - half, mean + half), "p_value": p, "sd": sd, "se": se}


def paired_difference_variance(a_only: int, b_only: int, n: int) -> float:
    """The sampling variance of a paired accuracy difference on ``n`` items, from McNemar's counts.

    The per-item difference is +1 (only a right), -1 (only b) or 0, so the variance of its mean
    is ``(b + c) / n**2 - (b - c)**2 / n**3`` with ``b = a_only`` and ``c = b_only``.
    """
    if n <= 0 or a_only < 0 or b_only < 0 or a_only + b_only > n:
        raise ValueError(f"Need 0 <= a_only, b_only and a_only + b_only <= n > 0 (got {a_only}, {b_only}, {n}).")
    return (a_only + b_only) / n**2 - (a_only - b_only) ** 2 / n**3


def _t_scale(replicates: np.ndarray, centre: float, df: int) -> np.ndarray:
    """Replicates with their deviations from ``centre`` mapped from the normal to Student's t scale.

    The map is monotone, so order and signs relative to ``centre`` are kept; a deviation of z
    bootstrap standard errors becomes the t quantile of the same tail area (1.96 -> 2.78 at 4 df).
    """
    from scipy import stats

    se = float(replicates.std(ddof=1)) if len(replicates) > 1 else 0.0
    if se == 0 or df < 1:
        return replicates
    z = np.clip((replicates - centre) / se, -30, 30)  # beyond 30 the normal tail underflows to 0
    return centre + se * np.sign(z) * stats.t.isf(stats.norm.sf(np.abs(z)), df)


def _hierarchical_replicates(rows: list[dict], n_boot: int, seed: int, small_sample: bool) -> np.ndarray:
    """Replicates of the mean per-run difference: runs resampled, then items within each drawn run.

    A run's item differences take three values (+1 a only, -1 b only, 0 tie), so resampling its
    ``n`` items with replacement is a multinomial draw of the three counts; drawing the counts
    (two binomials) gives the same distribution as drawing items, and vectorises.
    """
    n = np.array([r["n"] for r in rows], dtype=np.int64)
    plus = np.array([r["mcnemar"]["a_only"] for r in rows], dtype=np.int64)
    minus = np.array([r["mcnemar"]["b_only"] for r in rows], dtype=np.int64)
    diff = (plus - minus) / n
    k, observed = len(diff), float(diff.mean())
    rng = np.random.default_rng(seed)
    drawn = rng.integers(k, size=(n_boot, k))
    size = n[drawn]
    up = rng.binomial(size, (plus / n)[drawn])
    rest = np.where(n > plus, minus / np.maximum(n - plus, 1), 0.0)  # share of b-only among the rest
    down = rng.binomial(size - up, rest[drawn])
    centre, item_scale = diff, 1.0
    if small_sample and k > 1:
        # Davison & Hinkley's (1997, sec. 3.8) two-stage adjustment: resampling items inside the
        # drawn runs adds their item variance a second time (it is already in the runs' spread),
        # and resampling k run values gives only (k - 1)/k of their variance. Scaling the runs'
        # deviations from the grand mean by c makes the replicates' variance s^2/k, the t-test's.
        s2 = float(diff.var(ddof=1))
        within = float(np.mean([paired_difference_variance(int(x), int(y), int(m)) for x, y, m in zip(plus, minus, n)]))
        c = math.sqrt(max(s2 - within, 0.0) * k / ((k - 1) * s2)) if s2 > 0 else 0.0
        centre = observed + c * (diff - observed)
        if s2 < within:  # runs agree more closely than item noise alone suggests: trust s^2 as the t-test does
            item_scale = math.sqrt(s2 / within)
    replicates = (centre[drawn] + item_scale * ((up - down) / size - diff[drawn])).mean(axis=1)
    if small_sample and k > 1:
        replicates = _t_scale(replicates, observed, k - 1)
    return replicates


def _percentile_ci(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates at ``level``."""
    lo, hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def hierarchical_bootstrap(
    a_runs: Runs, b_runs: Runs, n_boot: int = 2000, seed: int = 0, level: float = 0.95, small_sample: bool = True
) -> dict:
    """Two-stage paired bootstrap of ``accuracy(a) - accuracy(b)`` with the training run as the unit.

    Each replicate draws k runs with replacement (paired keys: a run's two sides move together),
    then resamples each drawn run's test items with replacement (paired items: an item's a and b
    move together), and takes the mean over the drawn runs of (accuracy a - accuracy b). Runs are
    paired as in ``per_run_differences``; runs may share test items or not. Seeds tested on one
    shared test set give an interval for the recipe on that test set: an item that favours one
    side in every run moves no run's difference relative to the others, so neither this interval
    nor the t-test over runs counts the choice of test items (folds with their own items do).

    With 3-5 runs a plain percentile bootstrap under-covers: k resampled values spread about
    sqrt((k - 1)/k) too little, and a normal-shaped spread ignores that the run-to-run variance
    is estimated from k - 1 degrees of freedom. With ``small_sample`` (the default, k > 1) two
    corrections apply. (1) Davison & Hinkley's two-stage adjustment (Bootstrap Methods and their
    Application, 1997, sec. 3.8): the runs' deviations from the grand mean are scaled (by up to
    sqrt(k/(k - 1)), less where item resampling supplies part of the spread, and the item part
    itself scaled down where runs agree more closely than item noise suggests) so that the
    replicates' variance is s^2/k, the variance the t-test over runs uses. (2) The replicates'
    deviations from the observed difference are mapped from the normal to Student's t scale with
    k - 1 df: the small-sample widening of Hesterberg's expanded percentile interval (Am. Stat.
    69:371, 2015), done as a smooth map because a 3-run bootstrap is too lumpy for far percentiles.
    In the simulation of tests/test_stats.py (true difference 3 points, run sd 5 points, 250
    items per run, 2,000 studies) the 95 % interval covered the truth in 95.1 % of studies at
    k = 5 and 94.7 % at k = 3; without the corrections in 92.1 % and 86.0 %, and the item-only
    ``paired_bootstrap`` in about 65 %. With one run only items are resampled: no run-to-run
    variation is counted. With k runs all of one difference the interval is a point, as the t
    interval is.

    Returns ``difference`` (mean over runs of the per-run differences), ``ci`` (percentile, at
    ``level``), ``level``, ``p_value`` (two-sided: twice the smaller of ``(1 + #replicates <= 0)``
    and ``(1 + #replicates >= 0)``, over ``n_boot + 1``, capped at 1, so never 0), ``n_runs``,
    ``n_boot`` and ``small_sample`` (whether the corrections were applied).
    """
    rows = per_run_differences(a_runs, b_runs)
    replicates = _hierarchical_replicates(rows, n_boot, seed, small_sample)
    below, above = 1 + int((replicates <= 0).sum()), 1 + int((replicates >= 0).sum())
    return {
        "difference": float(np.mean([r["difference"] for r in rows])),
        "ci": _percentile_ci(replicates, level),
        "level": level,
        "p_value": min(1.0, 2 * min(below, above) / (n_boot + 1)),
        "n_runs": len(rows),
        "n_boot": n_boot,
        "small_sample": small_sample and len(rows) > 1,
    }


def random_effects(differences: Sequence[float], variances: Sequence[float], level: float = 0.95) -> dict:
    """DerSimonian-Laird random-effects meta-analysis of per-run (per-fold) differences.

    ``variances`` are the within-run sampling variances (``paired_difference_variance``). The
    between-run variance tau^2 is DerSimonian and Laird's (1986) moment estimate from Cochran's Q.
    The random-effects interval and p use Hartung-Knapp-Sidik-Jonkman (t with k - 1 df, the
    variance scaled by Q's generalised form), which holds its level with few studies where the
    normal DL interval is too narrow (IntHout et al., BMC Med Res Methodol 14:25, 2014); the
    scale factor is kept at least 1 (Knapp & Hartung 2003) so it is never narrower than DL's.

    Returns ``estimate``, ``ci``, ``p_value``, ``se`` (random effects, HKSJ), ``tau2``, ``q``,
    ``q_df``, ``q_p_value`` (chi-square), ``i2`` (share of the spread beyond sampling noise),
    ``k`` and ``fixed`` (the inverse-variance fixed-effect ``estimate``, ``ci``, ``p_value``,
    ``se``, normal). With one run, the random-effects ``ci``, ``p_value``, ``se``, ``tau2``,
    ``q_p_value`` and ``i2`` are ``None``.
    """
    from scipy import stats

    d, v = _differences(differences), np.asarray(variances, dtype=float)
    k = len(d)
    if not k or len(v) != k:
        raise ValueError(f"random_effects needs one variance per difference (got {k} and {len(v)}).")
    if (v <= 0).any():
        raise ValueError(
            "Every within-run variance must be positive: a run where the two sides never disagree "
            "has variance 0; count it as one discordant item or leave it out."
        )
    w = 1 / v
    fixed = float((w * d).sum() / w.sum())
    se_fixed = math.sqrt(1 / w.sum())
    z = float(stats.norm.ppf((1 + level) / 2))
    out = {
        "estimate": fixed,
        "ci": None,
        "p_value": None,
        "se": None,
        "tau2": None,
        "q": 0.0,
        "q_df": 0,
        "q_p_value": None,
        "i2": None,
        "k": k,
        "fixed": {
            "estimate": fixed,
            "ci": (fixed - z * se_fixed, fixed + z * se_fixed),
            "se": se_fixed,
            "p_value": float(2 * stats.norm.sf(abs(fixed) / se_fixed)),
        },
    }
    if k < 2:
        return out
    q = float((w * (d - fixed) ** 2).sum())
    tau2 = max(0.0, (q - (k - 1)) / float(w.sum() - (w**2).sum() / w.sum()))
    w_re = 1 / (v + tau2)
    estimate = float((w_re * d).sum() / w_re.sum())
    scale = max(1.0, float((w_re * (d - estimate) ** 2).sum()) / (k - 1))
    se = math.sqrt(scale / w_re.sum())
    half = float(stats.t.ppf((1 + level) / 2, k - 1)) * se
    return {
        **out,
        "estimate": estimate,
        "ci": (estimate - half, estimate + half),
        "se": se,
        "p_value": float(2 * stats.t.sf(abs(estimate) / se, k - 1)),
        "tau2": tau2,
        "q": q,
        "q_df": k - 1,
        "q_p_value": float(stats.chi2.sf(q, k - 1)),
        "i2": max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0,
    }


# --- power and equivalence over runs ---------------------------------------------------------------


def power_over_runs(effect: float, run_sd: float, k: int, alpha: float = 0.05) -> float:
    """The probability that a two-sided t-test over ``k`` runs at level ``alpha`` rejects, when the
    per-run differences are Normal(``effect``, ``run_sd``): exact, from the noncentral t.

    ``run_sd`` is the sd of per-run differences as ``t_over_runs`` reports it: it holds the
    run-to-run variation *and* the item noise of one run's test set, so the answer is for runs
    tested on as many items as those it was measured on (more items shrink only the item part).
    """
    from scipy import stats

    if k < 2:
        raise ValueError(f"A t-test over runs needs at least 2 runs (got k={k}).")
    if run_sd <= 0:
        raise ValueError(f"run_sd must be positive (got {run_sd}).")
    df, crit = k - 1, float(stats.t.isf(alpha / 2, k - 1))
    ncp = effect * math.sqrt(k) / run_sd
    # scipy's noncentral t returns NaN for a far tail it cannot resolve (e.g. the lower tail at
    # ncp 20 with 2 df); such a tail holds no probability that matters
    upper, lower = float(stats.nct.sf(crit, df, ncp)), float(stats.nct.cdf(-crit, df, ncp))
    upper, lower = (float(ncp > 0) if math.isnan(upper) else upper), (float(ncp < 0) if math.isnan(lower) else lower)
    return min(1.0, upper + lower)


def mde_over_runs(run_sd: float, k: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference that a two-sided t-test over ``k`` runs detects with
    probability ``power`` at level ``alpha`` (``power_over_runs`` solved for the effect; ``run_sd``
    as there: the observed sd of per-run differences, item noise included)."""
    from scipy import optimize

    if not alpha < power < 1:
        raise ValueError(f"power must lie between alpha={alpha} and 1 (got {power}).")
    high = run_sd
    while power_over_runs(high, run_sd, k, alpha) < power:  # power rises with the effect: bracket it
        high *= 2
    return float(optimize.brentq(lambda d: power_over_runs(d, run_sd, k, alpha) - power, 0.0, high, xtol=1e-12))


def _verdict(ci90: tuple[float, float] | None, ci95: tuple[float, float] | None, margin: float) -> str:
    """``equivalent`` when the 90 % interval lies inside (-margin, margin); else ``below`` / ``above``
    when the 95 % interval lies wholly below / above 0; else ``inconclusive``."""
    if ci90 is None or ci95 is None:
        return "inconclusive"
    if -margin < ci90[0] and ci90[1] < margin:
        return "equivalent"
    if ci95[1] < 0:
        return "below"
    return "above" if ci95[0] > 0 else "inconclusive"


def tost_over_runs(differences: Sequence[float] | Sequence[Mapping], margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided t-tests over runs of "the mean difference lies within (-margin, +margin)".

    ``p_lower`` tests H0: mean <= -margin, ``p_upper`` H0: mean >= +margin; ``p_tost`` is the larger,
    and equivalence holds at ``alpha`` iff the (1 - 2 alpha) t interval (``ci90`` at 5 %) lies
    inside the margins. Returns those, ``ci95``, ``mean``, ``k`` and ``verdict`` (as in
    ``equivalence``). With one run the p-values and intervals are ``None`` and the verdict
    ``inconclusive``.
    """
    from scipy import stats

    if margin <= 0:
        raise ValueError(f"An equivalence margin must be positive (got {margin}).")
    narrow, wide = t_over_runs(differences, 1 - 2 * alpha), t_over_runs(differences, 1 - alpha)
    mean, se, k = narrow["mean"], narrow["se"], narrow["k"]
    p_lower = p_upper = None
    if se is not None:
        if se > 0:
            p_lower = float(stats.t.sf((mean + margin) / se, k - 1))
            p_upper = float(stats.t.cdf((mean - margin) / se, k - 1))
        else:  # runs all equal: each null is rejected exactly when the mean lies on the far side of it
            p_lower, p_upper = float(mean <= -margin), float(mean >= margin)
    return {
        "mean": mean,
        "k": k,
        "margin": margin,
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p_tost": None if p_lower is None else max(p_lower, p_upper),
        "ci90": narrow["ci"],
        "ci95": wide["ci"],
        "verdict": _verdict(narrow["ci"], wide["ci"], margin),
    }


def equivalence(a_runs: Runs, b_runs: Runs, margin: float, n_boot: int = 2000, seed: int = 0) -> dict:
    """Is ``accuracy(a) - accuracy(b)`` within ``±margin``? Answered over runs two ways.

    ``runs``: two one-sided t-tests on the per-run differences (``tost_over_runs``).
    ``bootstrap``: the 90 % and 95 % percentile intervals of the same replicates as
    ``hierarchical_bootstrap`` (same ``n_boot`` and ``seed``, so its 95 % interval is that one).

    Each part has a ``verdict``, checked in this order: ``"equivalent"`` when the 90 % interval
    lies inside (-margin, +margin), which is TOST at 5 % (a difference may be significant and
    still smaller than the margin: it is then equivalent); ``"below"`` when the whole 95 %
    interval lies below 0 (a is significantly worse; compare its upper end with -margin to say
    whether by more than the margin); ``"above"`` when it lies above 0; else ``"inconclusive"``.
    Returns ``margin``, ``difference`` (mean per-run difference), ``n_runs``, ``runs`` and ``bootstrap``.
    """
    if margin <= 0:
        raise ValueError(f"An equivalence margin must be positive (got {margin}).")
    rows = per_run_differences(a_runs, b_runs)
    replicates = _hierarchical_replicates(rows, n_boot, seed, small_sample=True)
    ci90, ci95 = _percentile_ci(replicates, 0.90), _percentile_ci(replicates, 0.95)
    return {
        "margin": margin,
        "difference": float(np.mean([r["difference"] for r in rows])),
        "n_runs": len(rows),
        "runs": tost_over_runs(rows, margin),
        "bootstrap": {"ci90": ci90, "ci95": ci95, "verdict": _verdict(ci90, ci95, margin)},
    }
