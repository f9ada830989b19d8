"""Parsing teacher output and voting over samples."""

import pytest

from utils.prompts import build_prompt, load_exemplars
from utils.rationales import label_key, majority_vote, parse_cot, parse_cot_detailed


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (" Sara has 12 - 5 = 7 marbles. The answer is ( 12 - 5 ).", "( 12 - 5 )"),
        ("She has 3 * 4 = 12. The answer is ( 3 * 4 ).\n\nQ: Tom has 5 apples.\nA: The answer is ( 1 + 1 ).", "( 3 * 4 )"),
        ("So the answer is 27.", "27"),
        ("They share them, 15 / 3 = 5. the answer is: **( 15 / 3 )**", "( 15 / 3 )"),
        ("He has 6 × 4 = 24 pens. The answer is 6 × 4.", "6 * 4"),
        ("Total: 1,200 + 300 = 1,500. The answer is 1,500.", "1500"),
        ("No marker here, but 19 + 8 = 27 marbles.", "27"),
    ],
)
def test_parse_cot_reads_labels(text, label):
    assert parse_cot(text, "arith")[1] == label


def test_parse_cot_cuts_run_on_and_keeps_rationale():
    rationale, label = parse_cot(" A box holds 6. 6 * 4 = 24. The answer is ( 6 * 4 ).\nQ: next one\nA: 1", "arith")
    assert rationale == "A box holds 6. 6 * 4 = 24."
    assert label == "( 6 * 4 )"


@pytest.mark.parametrize("text", ["", "   ", "I do not know.", "The answer is banana."])
def test_unparsable_outputs_say_why(text):
    parsed = parse_cot_detailed(text, "arith")
    assert parsed.label is None
    assert parsed.error


def test_unknown_task_parser_is_an_error():
    with pytest.raises(ValueError, match="Unknown task 'nope'. Valid choices: arith"):
        parse_cot("x", "nope")


def test_majority_vote_by_value():
    label, votes = majority_vote(["( 2 + 3 )", "5", "( 1 + 1 )", None], "arith")
    assert label == "( 2 + 3 )" and votes == 2
    assert majority_vote([None, "junk"], "arith") == (None, 0)


def test_votes_are_keyed_by_exact_value():
    # Six significant digits made 0.3333333 and 1 / 3 one vote; they are different answers.
    assert label_key("0.3333333", "arith") != label_key("1 / 3", "arith")
    assert majority_vote(["0.3333333", "1 / 3", "( 2 / 6 )"], "arith") == ("1 / 3", 2)
    assert label_key("22090000", "svamp") != label_key("22090603", "svamp")
    # The same value written differently is one vote.
    assert label_key(42.0, "svamp") == label_key("( 84 / 2 )", "svamp") == label_key("( 84.0 / 2.0 )", "svamp")
    assert majority_vote(["( 84 / 2 )", "41", "42.0"], "svamp") == ("( 84 / 2 )", 2)


def test_prompt_forms():
    spec = load_exemplars("arith")
    text = build_prompt({"input": "How many?"}, "arith", n_shots=2)
    assert text.count("Q: ") == 3 and text.endswith("Q: How many?\nA:")
    assert spec["exemplars"][0]["label"] in text
    chat = build_prompt("How many?", "arith", n_shots=2, chat=True)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert chat[-1]["content"] == "How many?"


def test_missing_exemplars_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No few-shot exemplars"):
        load_exemplars("arith", tmp_path)
