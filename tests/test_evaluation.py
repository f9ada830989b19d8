"""Evaluation: the metric on hand-made predictions, and generation on the real bundled model:
every inference method, no state left behind (padding side, random state), long prompts cut as in
training, labels stopped at their first newline."""

import pytest
import torch
from datasets import Dataset

from tests.evaluation_data import arith_dataset
from utils.evaluation import accuracy_from_predictions, encode_prompts, evaluate_student, generate_predictions
from utils.tasks import get_task, task_correct

# --- the metric on hand-made predictions -----------------------------------------------------------

HOSTILE = ["__import__('os').system('echo hi')", "open('/etc/passwd').read()", "9 ** 9 ** 9", "(lambda: 3)()",
           "1 / 0", "x + 1", "3 + 4; import os", "'7'", "[7][0]"]


@pytest.mark.parametrize("task", ["arith", "svamp"])
def test_equation_metric_scores_values_and_rejects_everything_else(task):
    gold = "( 3.0 + 4.0 )"
    assert task_correct(task, "( 3 + 4 )", gold)
    assert task_correct(task, "4 + 3", gold)
    assert task_correct(task, "7", gold)
    assert not task_correct(task, "( 3 + 5 )", gold)
    for bad in ["", None, "seven", "( 3 + ", *HOSTILE]:
        assert not task_correct(task, bad, gold), bad


def test_label_metric_for_classification_tasks():
    assert task_correct("esnli", "Entailment", "entailment")
    assert not task_correct("esnli", "contradiction", "entailment")
    assert not task_correct("esnli", "", "entailment")
    assert not task_correct("esnli", HOSTILE[0], "entailment")


def test_accuracy_is_recomputed_from_gold_and_prediction_not_from_the_saved_flag():
    rows = [{"prediction": "( 2 + 2 )", "gold": "4", "correct": False},
            {"prediction": "__import__('os')", "gold": "4", "correct": True},
            {"prediction": None, "gold": "4", "correct": True},
            {"prediction": "8 / 2", "gold": "( 2 * 2 )", "correct": False}]
    assert accuracy_from_predictions(rows, "svamp") == 0.5
    with pytest.raises(ValueError, match="No predictions"):
        accuracy_from_predictions([], "svamp")


def test_a_task_object_scores_and_parses_like_its_name():
    from utils.prompting import build_rows
    from utils.rationales import majority_vote, parse_cot

    rows = [{"prediction": "( 2 + 2 )", "gold": "4"}, {"prediction": "5", "gold": "4"}]
    assert accuracy_from_predictions(rows, get_task("svamp")) == accuracy_from_predictions(rows, "svamp") == 0.5
    cqa = get_task("cqa")
    split = Dataset.from_list([{"id": "1", "input": "Q?", "label": "bank", "teacher_label": "bank",
                                "rationale": "Money is kept in a bank.", "teacher_correct": True}])
    assert build_rows(split, "dss", rationale_answer=True, task=cqa) == build_rows(split, "dss", rationale_answer=True,
                                                                                  task="cqa")
    text = "Money is kept in a bank. So the answer is (b) bank."
    assert parse_cot(text, cqa) == parse_cot(text, "cqa")
    assert majority_vote(["Bank", "bank", "river"], cqa) == majority_vote(["Bank", "bank", "river"], "cqa")


def test_an_unknown_task_fails_before_any_generation():
    test = arith_dataset(1, 2)["test"]
    with pytest.raises(ValueError, match="Unknown task 'nope'. Valid choices: arith"):
        evaluate_student(None, None, test, "causal", "nope")


# --- a real model, real generation ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_layer_student(tmp_path_factory):
    from utils.models import make_layer_subset_student

    return make_layer_subset_student("smollm2-135m-instruct", 2, tmp_path_factory.mktemp("s") / "s2")


@pytest.fixture(scope="module")
def student(two_layer_student):
    from utils.models import load_model, load_tokenizer

    return load_model(two_layer_student, "causal"), load_tokenizer(two_layer_student)


@pytest.mark.slow
def test_every_inference_method_saves_what_it_scored(student):
    from utils.rationales import parse_cot

    model, tok = student
    test = arith_dataset(1, 3)["test"]
    for inference in ("label", "rationale", "self_consistency"):
        result = evaluate_student(model, tok, test, "causal", "arith", max_new_tokens=8, inference=inference,
                                  rationale_tokens=12, num_samples=2)
        assert result["n"] == 3 and result["inference"] == inference
        assert result["accuracy"] == accuracy_from_predictions(result["predictions"], "arith")
        for row in result["predictions"]:
            if inference == "rationale":
                assert row["prediction"] == parse_cot(row["output"], "arith")[1]
            if inference == "self_consistency":
                assert isinstance(row["output"], list) and len(row["output"]) == 2
    with pytest.raises(ValueError, match="Valid choices: label, rationale, self_consistency"):
        evaluate_student(model, tok, test, "causal", "arith", inference="vote")


@pytest.mark.slow
def test_a_task_object_evaluates_like_its_name(student):
    model, tok = student
    test = arith_dataset(1, 3)["test"]
    by_name = evaluate_student(model, tok, test, "causal", "arith", max_new_tokens=6)
    assert evaluate_student(model, tok, test, "causal", get_task("arith"), max_new_tokens=6) == by_name


@pytest.mark.slow
def test_evaluation_leaves_the_tokenizer_padding_side_alone(student):
    # Old code set tokenizer.padding_side = "left" for causal students and never put it back.
    model, tok = student
    test = arith_dataset(1, 3)["test"]
    tok.padding_side = "right"
    evaluate_student(model, tok, test, "causal", "arith", max_new_tokens=4)
    generate_predictions(model, tok, list(test["input"]), "causal", max_new_tokens=4, batch_size=3)
    assert tok.padding_side == "right"


@pytest.mark.slow
def test_self_consistency_sampling_leaves_the_global_random_state_alone(student):
    # Old code called torch.manual_seed(seed) and left the caller's generator reseeded.
    model, tok = student
    test = arith_dataset(1, 2)["test"]
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = evaluate_student(model, tok, test, "causal", "arith", inference="self_consistency", rationale_tokens=6,
                             num_samples=2, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    again = evaluate_student(model, tok, test, "causal", "arith", inference="self_consistency", rationale_tokens=6,
                             num_samples=2, seed=5)
    assert [r["output"] for r in again["predictions"]] == [r["output"] for r in first["predictions"]], "seeded"


@pytest.mark.slow
def test_a_too_long_prompt_keeps_its_prefix_and_its_final_question(student):
    # Old code tokenized the whole prompt, however long, unlike training (which cuts the middle).
    model, tok = student
    question = " How many apples does Ann have now?"
    long_input = "Ann had 3 apples." + " She looked at the trees." * 60 + question
    limit = 32
    (ids,), n_cut = encode_prompts(tok, [long_input], "causal", max_source_length=limit)
    assert n_cut == 1 and len(ids) == limit
    text = tok.decode(ids)
    assert text.startswith("[label] Ann had 3")
    assert text.endswith(question + "\n")
    test = Dataset.from_list([{"id": "long", "input": long_input, "label": "( 3 + 0 )"},
                              {"id": "short", "input": "Ann had 3 apples." + question, "label": "( 3 + 0 )"}])
    result = evaluate_student(model, tok, test, "causal", "arith", max_new_tokens=4, max_source_length=limit)
    assert result["cut_sources"] == 1
    assert evaluate_student(model, tok, test, "causal", "arith", max_new_tokens=4)["cut_sources"] == 0


@pytest.mark.slow
def test_labels_stopped_at_the_first_line_match_full_decoding_cut_afterwards():
    # Decoding now stops once a label's first line is complete; the answers must be those of
    # decoding max_new_tokens and keeping the first line. The whole bundled model (not a layer cut)
    # writes several lines and often opens with a blank one, which a plain stop at "\n" got wrong.
    from utils.models import bundled_checkpoint, load_model, load_tokenizer

    path = bundled_checkpoint("smollm2-135m-instruct")
    model, tok = load_model(path, "causal"), load_tokenizer(path)
    inputs = list(arith_dataset(1, 4)["test"]["input"])
    full = generate_predictions(model, tok, inputs, "causal", max_new_tokens=16, batch_size=4, first_line=False)
    assert any("\n" in text for text in full), "the check needs outputs of more than one line"
    stopped = generate_predictions(model, tok, inputs, "causal", max_new_tokens=16, batch_size=4)
    assert stopped == [text.split("\n")[0].strip() for text in full]
    assert all(stopped)


def test_rationale_targets_end_the_way_the_task_parser_reads():
    from utils.prompting import build_rows
    from utils.rationales import parse_cot

    split = Dataset.from_list([{"id": "1", "input": "Q?", "label": "bank", "teacher_label": "bank",
                                "rationale": "Money is kept in a bank.", "teacher_correct": True}])
    rows = build_rows(split, "dss", rationale_answer=True, task="cqa")
    target = [r["target"] for r in rows if r["task"] == 1][0]
    assert target == "Money is kept in a bank. So the answer is bank."
    assert parse_cot(target, "cqa")[1] == "bank"
    assert [r["target"] for r in build_rows(split, "dss") if r["task"] == 1] == ["Money is kept in a bank."]
