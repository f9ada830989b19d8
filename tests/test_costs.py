"""Costs: the ratios and sentences computed from measurements, and one model measured per process."""

import sys
from pathlib import Path

import pytest

from utils.costs import compare_costs, describe_costs, latency_stats, measure_in_subprocess, percentile


def test_cost_ratios_are_computed_from_measurements():
    stats = latency_stats([0.1, 0.2, 0.3, 0.4], batch_seconds=0.5, batch_items=4)
    assert stats["latency_ms_p50"] == pytest.approx(250) and stats["throughput_batched"] == 8
    student = {"parameters": 50, "size_mb": 100.0, "latency_ms_p50": 20.0, "throughput_batched": 40.0}
    teacher = {"parameters": 150, "size_mb": 500.0, "latency_ms_p50": 400.0, "throughput_batched": 2.0}
    ratios = compare_costs(student, teacher)
    assert ratios == {"parameters_ratio": 3.0, "size_ratio": 5.0, "latency_p50_ratio": 20.0,
                      "throughput_batched_ratio": 20.0}
    assert "3.0 times fewer parameters" in describe_costs(ratios)
    assert compare_costs(student, {"parameters": None})["parameters_ratio"] is None


def test_percentile_interpolates_between_ranks():
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)


def test_an_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="Valid kinds: student, teacher"):
        measure_in_subprocess("server", path="x")


def test_the_costs_command_has_help(capsys):
    from utils.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["costs", "--help"])
    assert exc.value.code == 0 and "python -m utils costs" in capsys.readouterr().out


@pytest.mark.slow
def test_a_model_measured_in_its_own_process_does_not_carry_the_previous_ones_memory(tmp_path):
    # Notebook 04 used to measure the student, then the teacher, then the GGUF teacher in one
    # process: the peak memory of each row included the models measured before it.
    from utils.costs import measure_student_costs
    from utils.models import bundled_checkpoint, load_model, load_tokenizer, make_layer_subset_student

    inputs = ["Ann has 3 apples and buys 4 more. How many apples does she have?"] * 2
    big = bundled_checkpoint("smollm2-135m-instruct")  # model A: the whole bundled model
    small = make_layer_subset_student("smollm2-135m-instruct", 1, tmp_path / "one-layer")  # model B
    spec = dict(family="causal", inputs=inputs, batch_size=2, max_new_tokens=2, device="cpu")

    alone = measure_in_subprocess("student", path=small, **spec)
    a = load_model(big, "causal")  # A stays loaded, as it would in a notebook cell
    measure_student_costs(a, load_tokenizer(big), inputs, "causal", path=big, batch_size=2, max_new_tokens=2)
    after_a = measure_student_costs(load_model(small, "causal"), load_tokenizer(small), inputs, "causal", path=small,
                                    batch_size=2, max_new_tokens=2)
    a_mb = sum(p.numel() * p.element_size() for p in a.parameters()) / 2**20
    assert set(alone) == set(after_a) and alone["parameters"] == after_a["parameters"]
    assert alone["engine"] == "transformers" and alone["size_mb"] == pytest.approx(after_a["size_mb"])
    # B after A in one process holds A's weights too; B in its own process does not.
    assert after_a["peak_memory_mb"] > alone["peak_memory_mb"] + 0.5 * a_mb, (after_a, alone, a_mb)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_measuring_child_dies_with_its_parent(tmp_path):
    """A parent started with die_with_parent's child is SIGKILLed (as a killed notebook kernel is):
    the child must not outlive it."""
    import os
    import signal
    import subprocess
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "from utils.costs import die_with_parent\n"
         "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], preexec_fn=die_with_parent)\n"
         "print(child.pid, flush=True)\n"
         "time.sleep(60)\n"],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # alive while its parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        # reaped by init once dead; a zombie still answers kill(0) for a moment
        if open(f"/proc/{child}/stat").read().split()[2] == "Z":
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its killed parent")


def test_measure_in_subprocess_starts_its_child_with_die_with_parent(monkeypatch):
    import subprocess

    from utils import costs

    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="stop here"):
        costs.measure_in_subprocess("student", model="x")
    assert seen["preexec_fn"] is (costs.die_with_parent if sys.platform == "linux" else None)
