"""The multi-task student: rows, masking, the loss, and a short real training run."""

import pytest
import torch
from datasets import Dataset, DatasetDict

from utils.config import load_config
from utils.models import load_model, load_tokenizer, make_layer_subset_student
from utils.student import (
    IGNORE,
    LABEL_PREFIX,
    MultiTaskCollator,
    build_rows,
    multitask_loss,
    token_losses,
    tokenize_rows,
    train_student,
)


def _split(n=4, rationale=True):
    return Dataset.from_list([
        {"id": str(i), "input": f"Tom has {i + 2} apples and buys 3 more. How many apples?", "label": f"( {i + 2} + 3 )",
         "teacher_label": f"( {i + 2} + 4 )", "rationale": f"{i + 2} + 3 = {i + 5}." if rationale else "",
         "teacher_correct": False}
        for i in range(n)
    ])


def test_rows_per_mode():
    split = _split(2)
    assert [r["target"] for r in build_rows(split, "standard")] == ["( 2 + 3 )", "( 3 + 3 )"]
    assert [r["target"] for r in build_rows(split, "distill")] == ["( 2 + 4 )", "( 3 + 4 )"]
    dss = build_rows(split, "dss")
    assert sorted(r["task"] for r in dss) == [0, 0, 1, 1]
    assert all(r["source"].startswith(LABEL_PREFIX) for r in dss if r["task"] == 0)


def test_both_tasks_of_an_example_share_a_batch():
    from utils.student import _length_grouped

    rows = build_rows(_split(6), "dss")
    features = [{"input_ids": [0] * (5 + i % 3), **r} for i, r in enumerate(rows)]
    ordered = _length_grouped(features, batch_size=4, seed=1)
    assert sorted(r["example"] for r in ordered) == sorted(r["example"] for r in rows)
    for start in range(0, len(ordered), 4):
        batch = ordered[start : start + 4]
        for row in batch:  # every example in a batch brings both of its rows
            assert sum(r["example"] == row["example"] for r in batch) == 2


def test_dss_without_rationales_is_a_clear_error():
    with pytest.raises(ValueError, match="needs rationales"):
        build_rows(_split(2, rationale=False), "dss")
    with pytest.raises(ValueError, match="Valid modes"):
        build_rows(_split(2), "magic")


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    path = make_layer_subset_student("smollm2-135m-instruct", 2, tmp_path_factory.mktemp("s") / "s2")
    return path, load_tokenizer(path)


@pytest.mark.slow
def test_prompt_tokens_never_carry_loss(tiny_student):
    _, tokenizer = tiny_student
    rows = build_rows(_split(1), "dss")
    features = tokenize_rows(rows, tokenizer, "causal", 64, 32)
    for row, feat in zip(rows, features):
        n_src = len(tokenizer(row["source"] + "\n", add_special_tokens=False)["input_ids"])
        assert feat["labels"][:n_src] == [IGNORE] * n_src
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert feat["labels"][n_src:] == target == feat["input_ids"][n_src:]


@pytest.mark.slow
def test_one_forward_loss_matches_full_logits_and_alpha_one_is_label_only(tiny_student):
    path, tokenizer = tiny_student
    model = load_model(path).eval()
    rows = build_rows(_split(3), "dss")
    batch = MultiTaskCollator(tokenizer.pad_token_id)(tokenize_rows(rows, tokenizer, "causal", 64, 32))
    with torch.no_grad():
        ce, token_task = token_losses(model, batch, "causal")
        # Reference: full logits over every position, as a plain causal LM computes them.
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                ignore_index=IGNORE, reduction="none").reshape(targets.shape)
        ref_task = batch["task"][:, None].expand_as(targets)
    keep = targets != IGNORE
    assert torch.allclose(ce, ref[keep], atol=1e-4)
    assert torch.equal(token_task, ref_task[keep])
    loss_one, parts = multitask_loss(ce, token_task, 1.0)
    assert loss_one.item() == pytest.approx(ref[keep & (ref_task == 0)].mean().item(), rel=1e-5)
    loss_half, _ = multitask_loss(ce, token_task, 0.5)
    assert loss_half.item() == pytest.approx(0.5 * parts["label"] + 0.5 * parts["rationale"], rel=1e-5)


@pytest.mark.slow
def test_short_training_lowers_both_losses_and_reloads(tiny_student, tmp_path):
    path, tokenizer = tiny_student
    data = DatasetDict({"train": _split(8)})
    config = load_config("tiny", epochs=4.0, batch_size=8, learning_rate=1e-3)
    result = train_student(data, config, "dss", tmp_path / "out", init=str(path))
    for task in ("loss_label", "loss_rationale"):
        logs = [h[task] for h in result.log_history if task in h]
        assert len(logs) >= 2 and logs[-1] < logs[0], f"{task} did not fall: {logs}"
    from utils.evaluation import generate_predictions

    trained = load_model(tmp_path / "out")
    again = load_model(tmp_path / "out")
    inputs = list(data["train"]["input"][:2])
    assert generate_predictions(trained, tokenizer, inputs, "causal", max_new_tokens=8) == \
        generate_predictions(again, tokenizer, inputs, "causal", max_new_tokens=8)
