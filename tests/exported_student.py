"""One small exported student for the export, serving, GGUF and ONNX tests.

A 2-layer student (a layer subset of the bundled SmolLM2-135M-Instruct) is trained briefly, evaluated
as notebook 04 does and exported, once per test session: the first module that asks builds it in the
session's temporary folder, later modules find it there (a module fixture would retrain per file).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from datasets import Dataset, DatasetDict

RUN_NAME = "exported-student"
EXPORT_NAME = "arith-dss-student"


def _split(examples: list[dict], rationale: bool = True) -> Dataset:
    return Dataset.from_list([
        {"id": ex["id"], "input": ex["input"], "label": ex["equation"], "teacher_label": ex["equation"],
         "rationale": f"{ex['equation']} = {ex['answer']}." if rationale else "", "teacher_correct": True}
        for ex in examples])


def _data() -> DatasetDict:
    from utils.loaders import select_examples

    return DatasetDict({"train": _split(select_examples("arith", "train", 12, max_ops=1)),
                        "test": _split(select_examples("arith", "test", 6, max_ops=1))})


def _build(root: Path, data: DatasetDict) -> dict:
    """Train, evaluate and export the student under ``root`` (what notebooks 03 to 05 leave)."""
    from utils.config import load_config
    from utils.evaluation import evaluate_student, save_predictions
    from utils.export import export_student
    from utils.models import load_model, load_tokenizer, make_layer_subset_student
    from utils.report import write_report
    from utils.student import train_student

    base = make_layer_subset_student("smollm2-135m-instruct", 2, root / "base-2layers")
    config = load_config("tiny", epochs=6.0, batch_size=8, learning_rate=1e-3, max_source_length=64,
                         max_target_length=24)
    run_dir = root / "run"
    checkpoint = run_dir / "student" / "dss"
    train_student(data, config, "dss", checkpoint, init=str(base))
    result = evaluate_student(load_model(checkpoint), load_tokenizer(checkpoint), data["test"], "causal", "arith",
                              max_source_length=config.max_source_length)
    save_predictions(result["predictions"], run_dir / "eval" / "predictions_dss.jsonl")
    write_report(run_dir, "evaluation", {"task": "arith", "n_test": result["n"],
                                         "teacher": {"accuracy": 0.5, "ci95": [0.1, 0.9], "n": 6},
                                         "students": {"dss": {k: result[k] for k in ("accuracy", "ci95", "n")}}})
    export_student(checkpoint, run_dir / "export" / EXPORT_NAME)
    return {k: result[k] for k in ("accuracy", "ci95", "n")}


def exported_run(tmp_path_factory) -> dict:
    """The run folder (``dir``), its ``checkpoint``, the export (``out``), the ``test`` split and the
    ``evaluation`` summary; built on the session's first call."""
    root = tmp_path_factory.getbasetemp() / RUN_NAME
    done = root / "evaluation.json"
    data = _data()
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(_build(root, data)))
    run_dir = root / "run"
    return {"dir": run_dir, "checkpoint": run_dir / "student" / "dss", "out": run_dir / "export" / EXPORT_NAME,
            "test": data["test"], "evaluation": json.loads(done.read_text())}


def label_only(predictor, mode: str = "standard"):
    """The same predictor (PyTorch or ONNX) described as a student of ``mode``, which has no
    rationale task, without training one."""
    clone = copy.copy(predictor)
    clone.meta = {**predictor.meta, "mode": mode}
    return clone
