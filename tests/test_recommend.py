"""utils.recommend: the student notebook 04 recommends and notebook 05 ships."""

import pytest

from utils.recommend import recommend_student


def student(accuracy_items: list[bool]) -> dict:
    predictions = [{"id": str(i), "correct": c} for i, c in enumerate(accuracy_items)]
    return {"accuracy": sum(accuracy_items) / len(accuracy_items), "predictions": predictions}


def test_a_label_only_best_that_the_paired_test_cannot_separate_from_dss_yields_dss():
    # standard right on 80 of 100, dss on 77: three items apart, an interval that contains 0
    standard = student([True] * 80 + [False] * 20)
    dss = student([True] * 77 + [False] * 23)
    rec = recommend_student({"standard": standard, "distill": student([False] * 100), "dss": dss})
    assert rec["mode"] == "dss" and rec["most_accurate"] == "standard" and rec["can_explain"]
    low, high = rec["comparison"]["ci95"]
    assert low <= 0 <= high and "contains 0" in rec["reason"]


def test_a_measurably_worse_dss_keeps_the_most_accurate_student():
    rec = recommend_student({"standard": student([True] * 80 + [False] * 20),
                             "dss": student([True] * 30 + [False] * 70)})
    assert rec["mode"] == "standard" and not rec["can_explain"]
    assert rec["comparison"]["ci95"][1] < 0 and "measurably worse" in rec["reason"]


def test_the_most_accurate_dss_ships_and_ties_go_to_the_student_that_explains():
    same = [True] * 50 + [False] * 50
    assert recommend_student({"standard": student(same), "dss": student(same)})["mode"] == "dss"
    rec = recommend_student({"standard": student([True] * 10 + [False] * 90), "dss": student(same)})
    assert rec["mode"] == "dss" and rec["comparison"] is None


def test_without_an_explaining_student_the_most_accurate_ships():
    rec = recommend_student({"standard": student([True, False]), "distill": student([False, False])})
    assert rec["mode"] == "standard" and "no evaluated student" in rec["reason"]
    with pytest.raises(ValueError, match="at least one"):
        recommend_student({})
