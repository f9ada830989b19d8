"""ONNX for onnxruntime: the export of a real student (tests/exported_student.py), its greedy decoding
against PyTorch, and the predictor's interface on it."""

import json

import pytest

from tests.exported_student import label_only
from utils.onnx_export import OnnxPredictor, compare_onnx, export_onnx, left_pad


def test_onnx_refuses_seq2seq_students_clearly(tmp_path):
    (tmp_path / "student_meta.json").write_text(json.dumps({"family": "seq2seq", "mode": "dss", "task": "arith"}))
    with pytest.raises(ValueError, match="causal students"):
        export_onnx(tmp_path)


def test_left_pad_pads_before_each_prompt():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.slow
def test_onnx_export_matches_pytorch(run):
    onnx_dir = export_onnx(run["out"])
    assert (onnx_dir / "model.onnx").exists() and (onnx_dir / "student_meta.json").exists()
    inputs = list(run["test"]["input"][:3])
    result = compare_onnx(run["out"], onnx_dir, inputs, repeats=1)
    assert result["logits_max_abs_diff"] < 1e-3, result
    assert result["agreement"] == 1.0, result
    assert result["onnx_ms_per_example_batch1"] > 0 and result["pytorch_ms_per_example_batch1"] > 0
    onnx = OnnxPredictor.from_pretrained(onnx_dir)
    onnx.tokenizer.padding_side = "right"
    explained = onnx.predict(inputs[:1], rationale=True)
    assert explained[0]["label"] == result["pytorch"][0] and isinstance(explained[0]["rationale"], str)
    assert [r["label"] for r in onnx.predict(inputs)] == result["onnx"]
    assert onnx.tokenizer.padding_side == "right", "OnnxPredictor changed the tokenizer's padding side"
    assert onnx.can_explain
    with pytest.raises(ValueError, match="mode 'standard'"):
        label_only(onnx).predict(inputs[:1], rationale=True)
