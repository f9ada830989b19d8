"""Config: profiles, overrides, clear errors, seeds and run folders."""

import os
import random

import pytest

from utils.config import (
    PROFILES,
    load_config,
    load_run_config,
    make_run_dir,
    pick_device,
    save_config,
    seed_everything,
)


def test_default_profile_is_tiny(monkeypatch):
    monkeypatch.delenv("DSS_PROFILE", raising=False)
    assert load_config().profile == "tiny"


def test_env_selects_profile(monkeypatch):
    monkeypatch.setenv("DSS_PROFILE", "colab")
    config = load_config()
    assert config.profile == "colab"
    assert config.student_family == "seq2seq"


def test_argument_beats_env(monkeypatch):
    monkeypatch.setenv("DSS_PROFILE", "colab")
    assert load_config("paper").student_model == "google/t5-v1_1-base"


def test_every_profile_loads():
    for name in PROFILES:
        assert load_config(name).profile == name


def test_overrides_apply():
    config = load_config("tiny", alpha=0.2, modes="dss")
    assert config.alpha == 0.2
    assert config.modes == ("dss",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "huge"}, "Valid profiles: tiny, colab, paper"),
        ({"task": "nope"}, "Valid tasks: arith, svamp, cqa, esnli, anli1"),
        ({"teacher_backend": "gpt"}, "Valid choices: llamacpp, transformers, ollama, openai, vllm"),
        ({"student_family": "rnn"}, "Valid choices: causal, seq2seq"),
        ({"modes": ("dss", "magic")}, "Valid modes: standard, distill, dss"),
        ({"alpha": 1.5}, "alpha must lie in [0, 1]"),
        ({"not_a_field": 1}, "Unknown config field"),
        ({"torch_compile": "yes"}, "torch_compile must be True or False"),
    ],
)
def test_bad_values_name_the_valid_choices(kwargs, message):
    profile = kwargs.pop("profile", "tiny")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(profile, **kwargs)


def test_seed_everything_repeats_random_streams():
    import numpy as np
    import torch

    seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_pick_device_on_cpu_machine(capsys):
    import torch

    device = pick_device()
    assert device in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert device in ("mps", "cpu")
    assert f"device: {device}" in capsys.readouterr().out


def test_run_dir_and_latest_link(tmp_path):
    first = make_run_dir(tmp_path, "a")
    second = make_run_dir(tmp_path, "b")
    assert first.is_dir() and second.is_dir()
    assert os.readlink(tmp_path / "latest") == "b"


def test_run_config_round_trip(tmp_path):
    config = load_config("tiny", alpha=0.3, n_train=10)
    save_config(config, tmp_path)
    again = load_run_config(tmp_path, epochs=2.0)
    assert again.alpha == 0.3 and again.n_train == 10 and again.epochs == 2.0
    assert again.modes == config.modes


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    import os

    from utils.config import atomic_write_json, atomic_write_text

    path = tmp_path / "meta.json"
    atomic_write_json(path, {"old": True})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "{half")
    assert path.read_text() == '{\n  "old": true\n}' and [p.name for p in tmp_path.iterdir()] == ["meta.json"]
