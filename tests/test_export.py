"""The export folder, its model card, replacing an export safely, the predictor and the Hub upload.

Every test but the first few uses one real, briefly trained 2-layer student (tests/exported_student.py).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.exported_student import label_only
from utils.export import LABEL_PREFIX, Predictor, can_explain, export_student, hub_token, push_to_hub

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_export_and_serving_path_imports_neither_the_trainer_nor_torch():
    code = ("import sys; import utils.export, utils.serve, utils.gguf_export, utils.onnx_export; "
            "print(sorted(m for m in ('utils.student', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_only_dss_students_can_explain():
    assert can_explain({"mode": "dss"})
    assert not can_explain({"mode": "standard"}) and not can_explain({"mode": "distill"})


# --- export and model card -------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_writes_weights_tokenizer_prompt_format_and_a_card_with_the_report_metrics(run):
    out = run["out"]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "student_meta.json", "prompt_format.json",
                 "metrics.json", "README.md"):
        assert (out / name).exists(), f"export lacks {name}"
    assert not list(out.glob("*.bin")) and not list(out.parent.glob("*.tmp-*"))
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    accuracy = run["evaluation"]["accuracy"]
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and header["license"] == "apache-2.0"
    assert header["pipeline_tag"] == "text-generation" and "accuracy" in header["metrics"]
    (result,) = header["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == pytest.approx(accuracy, abs=1e-4)
    for section in ("## Intended use", "## Results", "## Limits", "[label] <problem>"):
        assert section in card
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == accuracy
    fmt = json.loads((out / "prompt_format.json").read_text())
    assert fmt["label_prefix"] == LABEL_PREFIX and fmt["example"].startswith(LABEL_PREFIX) and fmt["example"].endswith("\n")
    assert fmt["rationale_trained"] is True


@pytest.mark.slow
def test_the_model_card_loads_back_with_huggingface_hub_and_holds_the_eval_result(run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(run["out"] / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.model_name == run["out"].name and data.pipeline_tag == "text-generation"
    (result,) = data.eval_results
    assert result.metric_type == "accuracy" and result.dataset_split == "test"
    assert result.metric_value == pytest.approx(run["evaluation"]["accuracy"], abs=1e-4)
    assert "## Intended use" in card.text and "from utils.export import Predictor" in card.text


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["card", "publish"])
def test_an_export_that_fails_midway_leaves_the_previous_one_complete(run, predictor, tmp_path, monkeypatch, failure):
    out = tmp_path / "export" / "student"
    shutil.copytree(run["out"], out, ignore=shutil.ignore_patterns("gguf*", "onnx"))  # as older code left it
    first = export_student(run["checkpoint"], out, metrics={"which": "first"})
    assert out.is_symlink() and json.loads((out / "metrics.json").read_text())["which"] == "first"
    assert [p.name for p in out.parent.iterdir() if not p.name.startswith(".")] == ["student"]
    before = sorted(p.name for p in out.iterdir())

    import utils.export

    if failure == "card":  # the second export fails while its folder is half written

        def boom(*args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(utils.export, "model_card", boom)
    else:  # everything is written; putting it under the final name fails
        real_replace = os.replace

        def refuse_final_name(src, dst, *args, **kwargs):
            if Path(dst) == out:
                raise OSError("rename refused")
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", refuse_final_name)
    with pytest.raises((RuntimeError, OSError)):
        export_student(run["checkpoint"], out, metrics={"which": "second"})
    monkeypatch.undo()

    assert first == out and sorted(p.name for p in out.iterdir()) == before
    assert json.loads((out / "metrics.json").read_text())["which"] == "first"
    assert len(list(out.parent.iterdir())) == 2, "a failed export left a folder behind"  # the link and its folder
    text = run["test"]["input"][0]
    assert Predictor.from_pretrained(out).predict(text) == predictor.predict(text)

    export_student(run["checkpoint"], out, metrics={"which": "third"})
    assert json.loads((out / "metrics.json").read_text())["which"] == "third"
    assert len(list(out.parent.iterdir())) == 2, "the replaced export was not removed"


@pytest.mark.slow
def test_lora_checkpoint_is_exported_merged(run, tmp_path):
    import torch

    from utils.models import load_model, load_tokenizer
    from utils.student_init import apply_lora

    base = run["checkpoint"]
    peft_model = apply_lora(load_model(base), "causal", {"r": 4, "alpha": 8})
    torch.manual_seed(123)
    with torch.no_grad():  # LoRA B starts at zero; random values make the merge visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    adapter_dir = tmp_path / "lora" / "student" / "dss"
    peft_model.save_pretrained(adapter_dir)
    load_tokenizer(base).save_pretrained(adapter_dir)
    (adapter_dir / "student_meta.json").write_text((base / "student_meta.json").read_text())
    assert (adapter_dir / "adapter_config.json").exists()

    out = export_student(adapter_dir, tmp_path / "lora-export")
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    ids = load_tokenizer(base)("[label] Tom has 2 apples.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = peft_model.merge_and_unload()(ids).logits
        got = load_model(out)(ids).logits
        plain = load_model(base)(ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters changed the model


def test_push_to_hub_takes_its_token_from_the_environment_only(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        hub_token()
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    assert hub_token() == "hf_secret_value_123"
    with pytest.raises(FileNotFoundError, match="student_meta.json"):
        push_to_hub(tmp_path, "someone/student")
    (tmp_path / "student_meta.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\n---\n")
    with pytest.raises(ValueError, match="user-or-org/name") as info:
        push_to_hub(tmp_path, "no-namespace")
    assert "hf_secret" not in str(info.value)


# --- the predictor ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reloaded_export_has_the_checkpoint_weights_and_answers(run, predictor):
    from utils.evaluation import generate_predictions
    from utils.models import load_model, load_tokenizer

    original = load_model(run["checkpoint"])
    exported = predictor.model.state_dict()
    for name, tensor in original.state_dict().items():
        assert np.array_equal(tensor.numpy(), exported[name].numpy()), name
    inputs = list(run["test"]["input"][:3])
    expected = generate_predictions(original, load_tokenizer(run["checkpoint"]), inputs, "causal",
                                    max_source_length=predictor.meta.get("max_source_length"))
    assert [r["label"] for r in predictor.predict(inputs)] == expected


@pytest.mark.slow
def test_predictor_gives_the_evaluation_answers_with_and_without_rationale(run, predictor):
    saved = [json.loads(line) for line in (run["dir"] / "eval" / "predictions_dss.jsonl").read_text().splitlines()]
    inputs = [row["input"] for row in saved]
    plain = predictor.predict(inputs)
    assert [r["label"] for r in plain] == [row["prediction"] for row in saved]
    assert all(set(r) == {"label"} for r in plain)
    assert predictor.can_explain
    explained = predictor.predict(inputs[:2], rationale=True)
    assert [r["label"] for r in explained] == [row["prediction"] for row in saved[:2]]
    assert all(isinstance(r["rationale"], str) for r in explained)
    one = predictor.predict(inputs[0])  # a single string is a batch of one
    assert len(one) == 1 and one[0]["label"] == saved[0]["prediction"]
    with pytest.raises(ValueError, match="at least one input"):
        predictor.predict([])
    with pytest.raises(TypeError, match="must be a string"):
        predictor.predict(["fine", 3])


@pytest.mark.slow
def test_predictor_leaves_the_tokenizers_padding_side_alone(run, predictor):
    tokenizer = predictor.tokenizer
    saved = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        predictor.predict(list(run["test"]["input"][:2]), rationale=True)
        assert tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = saved


@pytest.mark.slow
def test_predictor_cuts_long_inputs_with_the_students_max_source_length(run, predictor, monkeypatch):
    import utils.evaluation

    real = utils.evaluation.generate_predictions
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("max_source_length", "missing"))
        return real(*args, **kwargs)

    monkeypatch.setattr(utils.evaluation, "generate_predictions", spy)
    long_input = run["test"]["input"][0] + " Filler words that say nothing." * 8
    limited = Predictor(predictor.model, predictor.tokenizer, {**predictor.meta, "max_source_length": 24})
    unlimited = Predictor(predictor.model, predictor.tokenizer,
                          {k: v for k, v in predictor.meta.items() if k != "max_source_length"})
    cut = limited.predict(long_input)[0]["label"]
    unlimited.predict(long_input)
    assert seen == [24, None]
    expected = real(predictor.model, predictor.tokenizer, [long_input], "causal", max_source_length=24)
    assert cut == expected[0]


@pytest.mark.slow
def test_a_rationale_from_a_label_only_student_is_a_clear_error(run, predictor):
    for mode in ("standard", "distill"):
        student = label_only(predictor, mode)
        assert not student.can_explain
        with pytest.raises(ValueError, match=f"mode '{mode}'.*only 'dss'"):
            student.predict(run["test"]["input"][0], rationale=True)
        assert set(student.predict(run["test"]["input"][0])[0]) == {"label"}
    assert label_only(predictor).describe()["can_explain"] is False
