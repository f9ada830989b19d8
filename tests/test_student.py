"""The multi-task student: rows, masking, the loss, and a short real training run."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from utils.config import load_config
from utils.models import load_model, load_tokenizer, make_layer_subset_student
from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX, build_rows
from utils.student import (
    IGNORE,
    MultiTaskCollator,
    _eval_rows,
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
    steps = [h for h in result.log_history if "loss" in h]
    assert steps and all(h["target_tokens_per_second"] > 0 for h in steps)  # the training log's rate
    assert not (tmp_path / "out" / "checkpoints").exists()  # checkpoints go once the final model is saved
    from utils.evaluation import generate_predictions

    trained = load_model(tmp_path / "out")
    again = load_model(tmp_path / "out")
    tokenizer = load_tokenizer(tmp_path / "out")  # tiny prunes the vocabulary: the student's own tokenizer
    inputs = list(data["train"]["input"][:2])
    assert generate_predictions(trained, tokenizer, inputs, "causal", max_new_tokens=8) == \
        generate_predictions(again, tokenizer, inputs, "causal", max_new_tokens=8)


# --- options, errors and settings (no model needed) ----------------------------------------------


def test_label_source_gold_by_default_or_teacher():
    split = _split(2)
    gold = [r["target"] for r in build_rows(split, "dss") if r["task"] == 0]
    teacher = [r["target"] for r in build_rows(split, "dss", label_source="teacher") if r["task"] == 0]
    assert gold == ["( 2 + 3 )", "( 3 + 3 )"] and teacher == ["( 2 + 4 )", "( 3 + 4 )"]
    # the rationales are the teacher's either way; standard and distill ignore the setting
    assert [r["target"] for r in build_rows(split, "dss", "teacher") if r["task"] == 1] == ["2 + 3 = 5.", "3 + 3 = 6."]
    assert build_rows(split, "distill", "gold") == build_rows(split, "distill", "teacher")
    assert build_rows(split, "standard", "teacher") == build_rows(split, "standard")
    with pytest.raises(ValueError, match="Valid choices: gold, teacher"):
        build_rows(split, "dss", label_source="human")


def test_train_student_checks_its_settings_before_loading_anything(tmp_path):
    data = DatasetDict({"train": _split(2)})
    missing = str(tmp_path / "never-built")  # would fail to load: each check must come first
    cases = [({"label_source": "oracle"}, "label_source"),
             ({"lora": {"rank": 4}}, "Unknown LoRA setting"),
             ({"alpha": 1.5}, r"alpha must lie in \[0, 1\]"),
             ({"student_family": "rnn"}, "Valid families: causal, seq2seq")]
    for changes, message in cases:
        config = load_config("tiny")
        for key, value in changes.items():
            setattr(config, key, value)  # past load_config's own validation, as a notebook user could
        with pytest.raises(ValueError, match=message):
            train_student(data, config, "dss", tmp_path / "out", init=missing)
    with pytest.raises(ValueError, match="Valid modes"):
        train_student(data, load_config("tiny"), "magic", tmp_path / "out", init=missing)


def test_a_model_that_does_not_exist_is_a_clear_oserror(tmp_path):
    data = DatasetDict({"train": _split(2)})
    with pytest.raises(OSError, match="Could not load model"):
        train_student(data, load_config("tiny"), "standard", tmp_path / "out", init=str(tmp_path / "no-such-model"))


def test_training_arguments_follow_use_bf16_and_the_checkpoint_settings(monkeypatch, tmp_path):
    import utils.config
    from utils.student import training_arguments

    config = load_config("tiny", batch_size=4, epochs=2.0)
    for flag in (False, True):
        monkeypatch.setattr(utils.config, "use_bf16", lambda device, flag=flag: flag)
        # both families by default: bf16 exactly where use_bf16 says it is fast; never when turned off
        assert training_arguments(load_config("tiny", student_family="seq2seq"), tmp_path, 16).bf16 is flag
        assert training_arguments(config, tmp_path, 16).bf16 is flag
        assert training_arguments(load_config("tiny", bf16=False), tmp_path, 16).bf16 is False
        assert training_arguments(load_config("tiny", student_family="seq2seq", bf16=False), tmp_path,
                                  16).bf16 is False
    monkeypatch.setattr(utils.config, "use_bf16", lambda device: False)
    args = training_arguments(config, tmp_path, 16)
    assert args.disable_tqdm is False and args.save_total_limit == 2
    assert args.save_strategy == "epoch" and args.output_dir == str(tmp_path / "checkpoints")
    assert (args.warmup_steps, args.logging_steps) == (1, 2)  # the schedule the tiny results used
    config.save_steps = 3
    args = training_arguments(config, tmp_path, 16, has_eval=True)
    assert (args.save_strategy, args.save_steps, args.eval_strategy, args.eval_steps) == ("steps", 3, "steps", 3)
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and not args.greater_is_better
    config.save_steps = 0
    assert training_arguments(config, tmp_path, 16).save_strategy == "no"


def test_last_checkpoint_skips_one_whose_save_was_cut_short(tmp_path):
    from utils.checkpoints import last_checkpoint

    assert last_checkpoint(tmp_path / "none") is None
    for step, files in ((2, "all"), (4, "all"), (6, "no state")):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("model.safetensors", "optimizer.pt", "scheduler.pt"):
            (folder / name).write_text("x")
        if files == "all":
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"log_hist')  # killed mid-write
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")


# --- real (small) models --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    from utils.models import make_t5_student

    corpus = ["[label] [rationale]"] + [f"{ex['input']} {ex['label']} {ex['rationale']}" for ex in _split(8)]
    path = make_t5_student(corpus, tmp_path_factory.mktemp("t5") / "t5", d_model=64, n_layers=2, n_heads=2, d_ff=128)
    return path, load_tokenizer(path)


def _two_forward_loss(model, batch, family, alpha):
    """The paper's step: one forward pass per task, each with full logits and the model's own loss."""
    losses = []
    for task_id in (0, 1):
        sel = batch["task"] == task_id
        width = int(batch["attention_mask"][sel].sum(1).max())
        labels = batch["labels"][sel]
        labels = (labels[:, :width] if family == "causal" else labels[:, : int((labels != IGNORE).sum(1).max())]).contiguous()
        out = model(input_ids=batch["input_ids"][sel][:, :width], attention_mask=batch["attention_mask"][sel][:, :width],
                    labels=labels)
        losses.append(out.loss)
    return alpha * losses[0] + (1 - alpha) * losses[1]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_one_forward_pass_equals_the_papers_two(family, tiny_student, tiny_t5):
    path, tokenizer = tiny_student if family == "causal" else tiny_t5
    model = load_model(path, family).eval()
    rows = build_rows(_split(4), "dss")
    batch = MultiTaskCollator(tokenizer.pad_token_id)(tokenize_rows(rows, tokenizer, family, 64, 32))
    with torch.no_grad():
        ce, token_task = token_losses(model, batch, family)
        for alpha in (0.0, 0.3, 1.0):
            ours, _ = multitask_loss(ce, token_task, alpha)
            assert ours.item() == pytest.approx(_two_forward_loss(model, batch, family, alpha).item(), rel=1e-5)


@pytest.mark.slow
def test_chat_template_prompt_format(tiny_student, tiny_t5, tmp_path):
    from transformers import AutoConfig

    from utils.prompting import format_prompt, trained_with_chat_template

    path, tokenizer = tiny_student
    source = LABEL_PREFIX + "Tom has 2 apples."
    assert format_prompt(tokenizer, source, "causal") == source + "\n"  # the default: the tiny results' format
    assert format_prompt(tiny_t5[1], source, "seq2seq", chat=True) == source
    chat = format_prompt(tokenizer, source, "causal", chat=True)
    assert tokenizer.chat_template and chat == tokenizer.apply_chat_template(
        [{"role": "user", "content": source}], tokenize=False, add_generation_prompt=True)
    assert source in chat and chat.rstrip().endswith("assistant")
    rows = build_rows(_split(1), "dss")
    for row, feat in zip(rows, tokenize_rows(rows, tokenizer, "causal", 256, 32, chat=True)):
        n_src = len(tokenizer(format_prompt(tokenizer, row["source"], "causal", True), add_special_tokens=False)["input_ids"])
        target = tokenizer(row["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert feat["labels"] == [IGNORE] * n_src + target
    plain = load_tokenizer(path)
    plain.chat_template = None
    assert format_prompt(plain, source, "causal", chat=True) == source + "\n"  # no template: the plain format
    config = AutoConfig.from_pretrained(path)
    config.dss_chat_template = True  # what train_student records in a chat-trained student
    config.save_pretrained(tmp_path)
    assert trained_with_chat_template(type("M", (), {"config": AutoConfig.from_pretrained(tmp_path)})())
    with pytest.raises(ValueError, match="Valid families"):
        format_prompt(tokenizer, source, "rnn")


@pytest.mark.slow
def test_lora_targets_and_token_losses_through_the_peft_wrapper(tiny_student, tiny_t5):
    from utils.student_init import apply_lora, lora_targets

    for (path, tokenizer), family, targets in ((tiny_student, "causal", ["q_proj", "v_proj"]),
                                                (tiny_t5, "seq2seq", ["q", "v"])):
        model = load_model(path, family).eval()
        assert lora_targets(model) == targets
        batch = MultiTaskCollator(tokenizer.pad_token_id)(tokenize_rows(build_rows(_split(2), "dss"), tokenizer,
                                                                        family, 64, 32))
        with torch.no_grad():
            plain, _ = token_losses(model, batch, family)
            wrapped = apply_lora(model, family, {"r": 4, "alpha": 8})
            through_peft, _ = token_losses(wrapped, batch, family)
        assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) < 0.05 * sum(
            p.numel() for p in wrapped.parameters())
        assert torch.allclose(plain, through_peft, atol=1e-5)  # LoRA starts as the identity (B = 0)


@pytest.mark.slow
def test_lora_trains_and_merges_into_a_plain_checkpoint(tiny_student, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from utils.evaluation import generate_predictions

    path, tokenizer = tiny_student
    data = DatasetDict({"train": _split(8)})
    config = load_config("tiny", epochs=2.0, batch_size=8, learning_rate=1e-2,
                         lora=True, keep_checkpoints=True, prune_vocab=False)  # adapters on the fixture's base
    result = train_student(data, config, "dss", tmp_path / "out", init=str(path))
    out = tmp_path / "out"
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    last = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))[-1]
    adapters = load_file(last / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapters.items())  # the adapters learned
    assert result.log_history[-1]["train_loss"] > 0
    peft_model = PeftModel.from_pretrained(load_model(path), last).eval()
    merged = load_model(out).eval()
    batch = MultiTaskCollator(tokenizer.pad_token_id)(tokenize_rows(build_rows(_split(3), "dss"), tokenizer,
                                                                    "causal", 64, 32))
    with torch.no_grad():
        before = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        after = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(before, after, atol=1e-4)
    inputs = list(data["train"]["input"][:3])
    assert generate_predictions(peft_model, tokenizer, inputs, "causal", max_new_tokens=8) == \
        generate_predictions(merged, tokenizer, inputs, "causal", max_new_tokens=8)


@pytest.mark.slow
@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")])
def test_out_of_memory_names_the_settings_to_lower(error, tiny_t5, monkeypatch, tmp_path):
    from utils.student import MultiTaskTrainer

    def run_out_of_memory(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(MultiTaskTrainer, "train", run_out_of_memory)
    config = load_config("tiny", student_family="seq2seq", batch_size=4)
    with pytest.raises(MemoryError) as info:
        train_student(DatasetDict({"train": _split(4)}), config, "dss", tmp_path / "out", init=str(tiny_t5[0]))
    for setting in ("batch_size=4", "max_source_length", "max_target_length", "student_layers", "lora", "resume=True"):
        assert setting in str(info.value)
    assert info.value.__cause__ is error

    def fail_otherwise(self, *args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(MultiTaskTrainer, "train", fail_otherwise)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors pass through unchanged
        train_student(DatasetDict({"train": _split(4)}), config, "dss", tmp_path / "out", init=str(tiny_t5[0]))


@pytest.mark.slow
def test_a_validation_split_picks_the_best_checkpoint(tiny_student, tmp_path):
    import json

    from safetensors.torch import load_file

    path, _ = tiny_student
    data = DatasetDict({"train": _split(8), "validation": _split(4, rationale=False)})  # no rationales: label rows
    config = load_config("tiny", epochs=3.0, batch_size=8, learning_rate=1e-3, keep_checkpoints=True)
    result = train_student(data, config, "dss", tmp_path / "out", init=str(path))
    evals = [h["eval_loss"] for h in result.log_history if "eval_loss" in h]
    assert len(evals) == 3  # one evaluation per epoch, with the checkpoint
    last = max((tmp_path / "out" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(min(evals))
    best, final = load_file(Path(state["best_model_checkpoint"]) / "model.safetensors"), load_file(
        tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)  # the saved student is the best one


# --- issue 14: the paper's loss in every batch, targets that end with their own answer, cuts -------


def test_a_label_only_dss_batch_weighs_the_label_loss_by_alpha():
    """Length-grouped batches can hold label rows only; in dss they still count alpha, not 1."""
    ce = torch.tensor([2.0, 4.0, 6.0])
    label_only = torch.zeros(3, dtype=torch.long)
    loss, parts = multitask_loss(ce, label_only, 0.3)
    assert parts == {"label": pytest.approx(4.0)} and loss.item() == pytest.approx(0.3 * 4.0)
    rationale_only = torch.ones(3, dtype=torch.long)
    assert multitask_loss(ce, rationale_only, 0.3)[0].item() == pytest.approx(0.7 * 4.0)
    assert multitask_loss(ce, label_only, 1.0)[0].item() == pytest.approx(4.0)  # standard / distill


@pytest.mark.slow
def test_training_on_a_label_only_dss_batch_takes_alpha_of_the_standard_gradient(tiny_student):
    """One real backward pass through MultiTaskTrainer.compute_loss: dss (alpha 0.25) on a batch
    of label rows gives exactly 0.25 of the gradient that standard training gives on it."""
    from transformers import TrainingArguments

    from utils.student import MultiTaskTrainer

    path, tokenizer = tiny_student
    rows = build_rows(_split(3), "standard")
    batch = MultiTaskCollator(tokenizer.pad_token_id)(tokenize_rows(rows, tokenizer, "causal", 64, 32))
    grads = {}
    for name, alpha in (("standard", 1.0), ("dss", 0.25)):
        model = load_model(path).train()
        args = TrainingArguments(output_dir="/tmp/unused-dss-args", use_cpu=True, report_to="none")
        trainer = MultiTaskTrainer(model=model, args=args, alpha=alpha, family="causal")
        trainer.compute_loss(model, batch).backward()
        grads[name] = model.get_input_embeddings().weight.grad.clone()
    assert torch.allclose(grads["dss"], 0.25 * grads["standard"], atol=1e-6, rtol=1e-4)


def test_a_rationale_target_ends_with_the_answer_it_reached_not_the_vote():
    """The teacher voted ( 2 + 4 ) but its kept (correct) rationale reached ( 2 + 3 ): the target
    must end with the rationale's own answer."""
    from utils.data import build_rationale_dataset

    samples = [{"text": "", "rationale": "2 + 4 = 6.", "label": "( 2 + 4 )", "error": None},
               {"text": "", "rationale": "2 + 4 = 6!", "label": "( 2 + 4 )", "error": None},
               {"text": "", "rationale": "Tom has 2 and gets 3: 2 + 3 = 5.", "label": "( 2 + 3 )", "error": None}]
    record = {"id": "x", "input": "Tom has 2 apples and gets 3. How many?", "gold": "( 3 + 2 )",
              "teacher_label": "( 2 + 4 )", "rationale": "2 + 4 = 6.", "samples": samples,
              "correct_rationale": "Tom has 2 and gets 3: 2 + 3 = 5.", "teacher_correct": False}
    dataset = build_rationale_dataset([record], "arith", policy="correct")
    assert dataset["train"][0]["rationale_label"] == "( 2 + 3 )"
    (target,) = [r["target"] for r in build_rows(dataset["train"], "dss", rationale_answer=True, task="arith")
                 if r["task"] == 1]
    assert target == "Tom has 2 and gets 3: 2 + 3 = 5. The answer is ( 2 + 3 )."
    kept_all = build_rationale_dataset([record], "arith", policy="all")["train"][0]
    assert kept_all["rationale"] == "2 + 4 = 6." and kept_all["rationale_label"] == "( 2 + 4 )"


@pytest.mark.slow
def test_long_sources_and_rationales_are_cut_in_the_middle_and_counted(tiny_student):
    """A too-long rationale keeps its final answer, a too-long source its prefix and its question
    with the trailing newline; the cut rows are counted."""
    _, tokenizer = tiny_student
    long_input = "Tom walks. " * 60 + "How many apples does Tom have?"
    long_rationale = "He counts again. " * 60 + "The answer is ( 2 + 3 )."
    split = Dataset.from_list([
        {"id": "0", "input": long_input, "label": "( 2 + 3 )", "teacher_label": "( 2 + 3 )",
         "rationale": long_rationale, "rationale_label": "( 2 + 3 )", "teacher_correct": True},
        {"id": "1", "input": "Tom has 2 apples.", "label": "( 2 )", "teacher_label": "( 2 )",
         "rationale": "He has 2.", "rationale_label": "( 2 )", "teacher_correct": True}])
    counts = {}
    features = tokenize_rows(build_rows(split, "dss"), tokenizer, "causal", 32, 24, counts=counts)
    assert counts == {"source": 2, "target": 1, "rows": 2}  # row 0's two tasks: 2 sources, 1 long target
    rationale = next(f for f in features if f["task"] == 1 and f["example"] == 0)
    target_ids = [t for t in rationale["labels"] if t != IGNORE]
    assert len(target_ids) == 24 and target_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target_ids[:-1]).endswith("The answer is ( 2 + 3 ).")
    label = next(f for f in features if f["task"] == 0 and f["example"] == 0)
    prompt_ids = [t for t, lab in zip(label["input_ids"], label["labels"]) if lab == IGNORE]
    text = tokenizer.decode(prompt_ids)
    assert len(prompt_ids) == 32 and text.startswith(LABEL_PREFIX + "Tom walks.")
    assert text.endswith("How many apples does Tom have?\n")
    short = [f for f in features if f["example"] == 1]
    assert all(IGNORE in f["labels"] for f in short)  # the short example is whole
    assert RATIONALE_PREFIX.strip() in tokenizer.decode(rationale["input_ids"][:8])


# --- issue 16: label-then-rationale, and choosing the checkpoint by validation accuracy ---------


def test_ltr_rows_put_the_rationale_after_the_label_in_one_target():
    rows = build_rows(_split(2), "ltr")
    assert [r["task"] for r in rows] == [0, 0] and all(r["source"].startswith(LABEL_PREFIX) for r in rows)
    assert rows[0]["target"] == "( 2 + 3 )\n2 + 3 = 5."
    assert rows[0]["target"].split("\n")[0] == "( 2 + 3 )"  # what label decoding (first line) reads back
    with pytest.raises(ValueError, match="'ltr' needs rationales"):
        build_rows(_split(2, rationale=False), "ltr")


@pytest.mark.slow
def test_select_by_accuracy_scores_validation_and_stops_early(tiny_student, tmp_path):
    path, _ = tiny_student
    data = DatasetDict({"train": _split(8), "validation": _split(4, rationale=False)})
    config = load_config("tiny", epochs=6.0, batch_size=8, learning_rate=1e-6, keep_checkpoints=True,
                         select_by="accuracy", early_stopping_patience=1)
    result = train_student(data, config, "ltr", tmp_path / "out", init=str(path))
    accuracies = [h["eval_accuracy"] for h in result.log_history if "eval_accuracy" in h]
    # lr 1e-6 changes nothing the greedy decode can see: no improvement after the first evaluation
    assert len(accuracies) == 2 and max(h.get("epoch", 0) for h in result.log_history) < 6
    last = max((tmp_path / "out" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    state = __import__("json").loads((last / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(max(accuracies))
    with pytest.raises(ValueError, match="select_by"):
        load_config("tiny", select_by="speed")


def test_dss_validation_scores_the_rationale_rows_only_when_its_loss_is_read():
    split = _split(3)
    by_loss = _eval_rows(split, "dss", "gold")
    assert sorted(r["task"] for r in by_loss) == [0, 0, 0, 1, 1, 1]
    # chosen by decoded accuracy, the validation loss is never read: the label rows alone
    assert _eval_rows(split, "dss", "gold", select_by="accuracy") == build_rows(split, "standard")
    assert _eval_rows(split, "dss", "teacher", select_by="accuracy") == build_rows(split, "distill")
    assert _eval_rows(split, "ltr", "gold", select_by="accuracy") == build_rows(split, "ltr")


@pytest.mark.slow
def test_early_stopping_waits_for_the_step_floor(tiny_student, tmp_path):
    path, _ = tiny_student
    data = DatasetDict({"train": _split(8), "validation": _split(4, rationale=False)})
    config = load_config("tiny", epochs=6.0, batch_size=8, learning_rate=1e-6, select_by="accuracy",
                         early_stopping_patience=1, early_stopping_min_steps=4)
    result = train_student(data, config, "ltr", tmp_path / "out", init=str(path))
    steps = [h["step"] for h in result.log_history if "eval_accuracy" in h]
    # one step an epoch and nothing learnt: without the floor it stops at step 2 (the test above);
    # evaluations at steps 1-3 cannot stop it, the first one at the floor does (no improvement)
    assert steps == [1, 2, 3, 4]
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="early_stopping_min_steps"):
            load_config("tiny", early_stopping_min_steps=bad)


def _rows_of_lengths(lengths, task=0):
    return [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE] * (n // 2) + list(range(n // 2 + 1, n + 1)),
             "task": task} for n in lengths]


def test_packing_places_every_row_once_with_restarting_positions():
    from utils.student import pack_rows

    features = _rows_of_lengths([30, 200, 10, 120, 90, 60]) + _rows_of_lengths([50], task=1)
    batch = pack_rows(features, pad_id=0, width=256)
    lines, length = batch["input_ids"].shape
    assert length <= 256 and lines == 3  # 560 tokens in lines of 256, no row split
    assert batch["input_ids"].numel() - sum(len(f["input_ids"]) for f in features) < 256 * lines - 560 + 1
    found = []
    for i in range(lines):
        starts = (batch["position_ids"][i] == 0).nonzero().flatten().tolist() + [length]
        for a, b in zip(starts, starts[1:]):
            if batch["token_task"][i, a] >= 0:  # a row, not the padding at the end of a line
                found.append((b - a, int(batch["token_task"][i, a])))
                assert batch["input_ids"][i, a:b].tolist() == list(range(1, b - a + 1))
                assert (batch["token_task"][i, a:b] == batch["token_task"][i, a]).all()
            else:
                assert (batch["labels"][i, a:b] == IGNORE).all()
    assert sorted(found) == sorted((len(f["input_ids"]), f["task"]) for f in features)
    wide = pack_rows(_rows_of_lengths([300, 20]), pad_id=0, width=256)
    assert wide["input_ids"].shape == (2, 300)  # a row longer than the width widens the lines; none is cut


@pytest.mark.slow
def test_a_packed_batch_gives_the_padded_loss_and_gradient(tiny_student):
    path, tokenizer = tiny_student
    model = load_model(path, "causal")
    split = _split(6).map(lambda ex, i: {"rationale": ex["rationale"] + " Then check it again." * (i % 3)},
                          with_indices=True)  # label rows short, rationale rows of three lengths: padding to skip
    features = tokenize_rows(build_rows(split, "dss"), tokenizer, "causal", 64, 32)
    padded = MultiTaskCollator(tokenizer.pad_token_id)(features)
    packed = MultiTaskCollator(tokenizer.pad_token_id, pack=True, pack_width=128)(features)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    grads = []
    for batch in (padded, packed):
        model.zero_grad()
        ce, token_task = token_losses(model, batch, "causal")
        loss, parts = multitask_loss(ce, token_task, 0.3)
        loss.backward()
        grads.append((loss.item(), parts, sorted(ce.tolist()), [p.grad.clone() for p in model.parameters()]))
    (loss_a, parts_a, ce_a, g_a), (loss_b, parts_b, ce_b, g_b) = grads
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert parts_b == pytest.approx(parts_a, rel=1e-5)
    assert ce_b == pytest.approx(ce_a, rel=1e-4, abs=1e-5)  # every target token scored exactly as when padded
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)  # float sums in another order


@pytest.mark.slow
def test_a_packed_student_with_a_pruned_vocabulary_trains_and_answers(tiny_student, tmp_path, monkeypatch):
    from utils.evaluation import evaluate_student
    from utils.student_init import vocabulary_texts

    monkeypatch.setenv("DSS_CACHE", str(tmp_path / "cache"))
    path, tokenizer = tiny_student
    test = _split(3).map(lambda ex: {"label": "( 977 * 4401 )"})  # a test answer no other text holds
    data = DatasetDict({"train": _split(8), "test": test})
    config = load_config("tiny", epochs=1.0, batch_size=8, pack_rows=True, prune_vocab=True)
    texts = vocabulary_texts(data, tokenizer, config)
    assert not any("977" in t for t in texts) and any(LABEL_PREFIX + test[0]["input"] in t for t in texts)
    result = train_student(data, config, "dss", tmp_path / "out", init=str(path))
    student = load_model(tmp_path / "out")
    kept = json.loads((tmp_path / "out" / "vocab_map.json").read_text())["kept_ids"]
    assert len(kept) == student.config.vocab_size < 2000 and result.target_tokens > 0
    scored = evaluate_student(student, load_tokenizer(tmp_path / "out"), data["test"], "causal", "arith")
    assert len(scored["predictions"]) == 3  # the pruned tokenizer and model answer end to end


@pytest.mark.slow
def test_seq2seq_lm_head_runs_on_target_positions_only_and_leaves_no_hook(tiny_t5):
    path, tokenizer = tiny_t5
    model = load_model(path, "seq2seq").eval()
    head = model.get_output_embeddings()
    seen = []
    probe = head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    for mode in ("standard", "dss"):
        batch = MultiTaskCollator(tokenizer.pad_token_id)(tokenize_rows(build_rows(_split(4), mode), tokenizer,
                                                                        "seq2seq", 64, 32))
        seen.clear()
        with torch.no_grad():
            ce, _ = token_losses(model, batch, "seq2seq")
        assert sum(shape[0] for shape in seen) == int((batch["labels"] != IGNORE).sum()) == ce.numel()
        assert all(len(shape) == 2 for shape in seen)  # (target positions, vocabulary): no padding, no batch axis
        with torch.no_grad():
            own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"]).loss  # full logits, the model's own mean loss
        if mode == "standard":
            assert ce.mean().item() == pytest.approx(own.item(), rel=1e-5)
    probe.remove()
    assert not head._forward_pre_hooks  # the target-position hook is gone after every pass


def test_torch_compile_is_off_unless_asked_and_reaches_the_trainer(tmp_path):
    from utils.config import PROFILES, load_config
    from utils.student import training_arguments

    assert all(not settings.get("torch_compile") for settings in PROFILES.values())  # no profile compiles
    assert training_arguments(load_config("tiny"), tmp_path, 32).torch_compile is False
    assert training_arguments(load_config("tiny", torch_compile=True), tmp_path, 32).torch_compile is True


def test_flushed_denormals_flushes_inside_the_block_only():
    """A float32 below 1.2e-38 (denormal) survives arithmetic by default; inside the block it is read
    as 0, and after the block (or with the option off) it survives again."""
    from utils.student import flushed_denormals

    tiny = torch.tensor([1e-39])  # stored as a denormal float32
    assert (tiny * 1.0).item() > 0
    with flushed_denormals() as flushed:
        if not flushed:
            pytest.skip("this CPU cannot flush denormals")
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() > 0
    with flushed_denormals(False) as flushed:
        assert flushed is False and (tiny * 1.0).item() > 0


@pytest.mark.slow
@pytest.mark.parametrize("flush", [True, False])
def test_training_flushes_denormals_as_the_config_says(flush, tiny_t5, monkeypatch, tmp_path):
    """train_student's steps run with denormals flushed (the default) or kept (flush_denormal=False),
    and flushing is off again once training returns."""
    import utils.student as student

    if flush and not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    torch.set_flush_denormal(False)
    seen = []
    real = student.token_losses

    def probing(*args, **kwargs):
        seen.append((torch.tensor([1e-39]) * 1.0).item())
        return real(*args, **kwargs)

    monkeypatch.setattr(student, "token_losses", probing)
    config = load_config("tiny", student_family="seq2seq", batch_size=4, epochs=1.0, flush_denormal=flush)
    assert config.flush_denormal is flush
    train_student(DatasetDict({"train": _split(4)}), config, "dss", tmp_path / "out", init=str(tiny_t5[0]))
    assert seen and all((value == 0.0) is flush for value in seen)
    assert (torch.tensor([1e-39]) * 1.0).item() > 0


def test_flush_denormal_must_be_a_bool():
    from utils.config import validate_student_options

    with pytest.raises(ValueError, match="flush_denormal must be True or False"):
        validate_student_options(load_config("tiny", flush_denormal="yes"))
