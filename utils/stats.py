"""Statistics for comparing models on the same test items: intervals, paired tests, Holm's correction.

Torch-free, so the report reads and recomputes them without loading a model. A paired test pairs
two systems' results *by item id*: each side is a mapping ``id -> correct`` (or a list of
prediction rows with ``"id"`` and ``"correct"``, as ``utils.evaluation.evaluate_student`` writes
them), both sides must hold exactly the same ids, and the order in which they come never matters.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping

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
            raise TypeError("Paired statistics need results keyed by item id: a dict id -> correct, or prediction "
                            f"rows with 'id' and 'correct' (got an item {row!r}).")
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
        parts = [f"{len(only_a)} only in the first ({_few(only_a)})" if only_a else "",
                 f"{len(only_b)} only in the second ({_few(only_b)})" if only_b else ""]
        raise ValueError(f"A paired test needs the same items on {what}: ids differ, "
                         + "; ".join(p for p in parts if p) + ".")


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
    both sides must cover the same ids. Items are resampled together, so seed and item variation
    both count. Returns the difference, its 95% interval and a two-sided p-value (how often the
    resampled difference falls on the other side of zero, doubled).
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
    below = sum(1 for s in stats if s <= 0) / n_boot
    above = sum(1 for s in stats if s >= 0) / n_boot
    return {"difference": observed, "ci95": (stats[int(0.025 * n_boot)], stats[min(n_boot - 1, int(0.975 * n_boot))]),
            "p_value": min(1.0, 2 * min(below, above))}


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
    return [{**c, "p_holm": p, "mcnemar": [{**m, "p_holm": next(tests)} for m in c.get("mcnemar", [])]}
            for c, p in zip(comparisons, boot)]


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
