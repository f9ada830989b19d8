"""Which student to ship: notebook 04's recommendation, with its reason; notebook 05 ships it.

The rule: the most accurate student, unless a student that can also explain its answers (one
trained on the ``[rationale]`` task, ``utils.export.can_explain``) is not measurably worse: its
paired difference against the most accurate one, on the same test items, has a 95% interval
that contains 0. Both cost the same to run (same architecture, same label prompt), so the one
that can also write a rationale gives more for the same price. An interval that excludes 0 keeps
the more accurate student; a small test set gives wide intervals, and the reason says so.

Torch-free: it reads evaluation results (per-item predictions with ``id`` and ``correct``).
"""

from __future__ import annotations

from utils.export import can_explain
from utils.stats import paired_bootstrap


def recommend_student(students: dict[str, dict], seed: int = 0) -> dict:
    """The student to ship among ``students`` (mode -> result with ``accuracy`` and ``predictions``).

    Returns ``{"mode", "most_accurate", "can_explain", "reason", "comparison"}``; ``comparison`` is
    the paired bootstrap (``utils.stats.paired_bootstrap``: ``difference``, ``ci95``, ``p_value``) of
    the recommended explaining student against the most accurate one, or None when no such
    comparison was needed. Ties in accuracy go to a student that can explain.
    """
    if not students:
        raise ValueError("recommend_student needs at least one evaluated student (notebook 04, section 2).")
    explains = {mode: can_explain({"mode": mode}) for mode in students}
    ranked = sorted(students, key=lambda m: (students[m]["accuracy"], explains[m]), reverse=True)
    best = ranked[0]
    out = {"mode": best, "most_accurate": best, "can_explain": explains[best], "comparison": None}
    acc = {m: 100 * students[m]["accuracy"] for m in students}
    if explains[best]:
        return out | {"reason": f"{best} is the most accurate student ({acc[best]:.1f}%) and can also explain "
                                f"its answers."}
    candidates = [m for m in ranked[1:] if explains[m]]
    if not candidates:
        return out | {"reason": f"{best} is the most accurate student ({acc[best]:.1f}%); no evaluated student "
                                "was trained to write rationales, so it answers with labels only."}
    other = candidates[0]
    test = paired_bootstrap([students[other]["predictions"]], [students[best]["predictions"]], seed=seed)
    low, high = (100 * x for x in test["ci95"])
    test = {"variant": other, "baseline": best, **test, "ci95": list(test["ci95"])}
    interval = f"{100 * test['difference']:+.1f} points, paired 95% interval {low:+.1f} to {high:+.1f}"
    if low <= 0 <= high:
        return {"mode": other, "most_accurate": best, "can_explain": True, "comparison": test,
                "reason": f"{best} scored highest ({acc[best]:.1f}%), but {other} ({acc[other]:.1f}%) is not "
                          f"measurably worse on the same test items ({interval}: it contains 0), costs the same "
                          f"to run, and can also explain its answers; a larger test set could still separate "
                          f"them."}
    return out | {"comparison": test,
                  "reason": f"{best} is the most accurate student ({acc[best]:.1f}%); {other}, the best student "
                            f"that can explain, is measurably worse ({interval}), so {best} ships, without "
                            f"rationales."}
