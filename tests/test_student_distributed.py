"""The student trainer across processes: a killed run resumes to the same weights, and torchrun with two
processes trains like one process with the same global batch.

Both tests start real training subprocesses on a 2-layer cut of the bundled model (CPU, gloo).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file

from utils.checkpoints import last_checkpoint
from utils.config import load_config
from utils.models import load_tokenizer, make_layer_subset_student
from utils.prompting import build_rows
from utils.student import tokenize_rows, train_student

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # seconds any one training subprocess may take before the test fails

# One training run; the test passes its settings as JSON. Threads are fixed so that runs compare
# bit for bit (a matmul may sum in another order with another thread count).
WORKER = """
import json, sys
import torch
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["root"])
torch.set_num_threads(spec["threads"])
from datasets import Dataset, DatasetDict
from utils.config import load_config
from utils.student import train_student

config = load_config("tiny", **spec["config"])
data = DatasetDict({"train": Dataset.from_list(spec["examples"])})
train_student(data, config, "dss", spec["out"], init=spec["init"], resume=spec["resume"])
if torch.distributed.is_initialized():
    print("backend:", torch.distributed.get_backend())
"""


def _examples(n: int) -> list[dict]:
    """Problems whose label rows all have one length and whose rationale rows all have another, so
    each process of a 2-process run holds as many target tokens of each task as the other."""
    pairs = [(a, b) for a in range(1, 9) for b in range(1, 9) if a + b <= 9][:n]
    return [
        {
            "id": str(i),
            "input": f"Tom has {a} apples and buys {b} more. How many apples?",
            "label": f"( {a} + {b} )",
            "teacher_label": f"( {a} + {b} )",
            "rationale": f"{a} + {b} = {a + b}.",
            "teacher_correct": True,
        }
        for i, (a, b) in enumerate(pairs)
    ]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return make_layer_subset_student("smollm2-135m-instruct", 2, tmp_path_factory.mktemp("d") / "s2")


def _worker(
    tmp_path: Path, out: Path, init: Path, config: dict, examples: list[dict], resume=False, threads=1, launcher=()
) -> list[str]:
    script = tmp_path / "train_worker.py"
    script.write_text(WORKER)
    spec = {
        "root": str(REPO_ROOT),
        "threads": threads,
        "config": config,
        "examples": examples,
        "out": str(out),
        "init": str(init),
        "resume": resume,
    }
    return [sys.executable, *launcher, str(script), json.dumps(spec)]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_a_killed_run_resumes_to_the_same_weights(student, tmp_path):
    # 16 rows, 4 per step: 4 steps per epoch, 12 in all; a checkpoint every 3 steps lands mid-epoch,
    # so resuming has to skip the batches of the current epoch that were already trained on.
    config = {"epochs": 3.0, "batch_size": 4, "learning_rate": 1e-3, "save_steps": 3}
    examples = _examples(8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    full_out, cut_out = tmp_path / "uninterrupted", tmp_path / "killed"
    # The two runs go side by side, one thread each; their output goes to files (a pipe could fill and block).
    with open(tmp_path / "full.log", "w") as full_log, open(tmp_path / "cut.log", "w") as cut_log:
        full = subprocess.Popen(
            _worker(tmp_path, full_out, student, config, examples), env=env, stdout=full_log, stderr=subprocess.STDOUT
        )
        cut = subprocess.Popen(
            _worker(tmp_path, cut_out, student, config, examples), env=env, stdout=cut_log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while last_checkpoint(cut_out / "checkpoints") is None and cut.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint appeared in time"
                time.sleep(0.02)
            cut.send_signal(signal.SIGKILL)  # no chance to clean up, as with a crash or a lost machine
            cut.wait(timeout=30)
            assert cut.returncode == -signal.SIGKILL, (tmp_path / "cut.log").read_text()[-3000:]
            assert not (cut_out / "model.safetensors").exists()
            step = int(Path(last_checkpoint(cut_out / "checkpoints")).name.split("-")[-1])
            assert 3 <= step < 12
            resumed = subprocess.run(
                _worker(tmp_path, cut_out, student, config, examples, resume=True),
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert resumed.returncode == 0, resumed.stderr[-3000:]
            assert full.wait(timeout=TIMEOUT) == 0, (tmp_path / "full.log").read_text()[-3000:]
        finally:
            for process in (full, cut):
                if process.poll() is None:
                    process.kill()
    log = json.loads((cut_out / "train_log.json").read_text())
    assert log["resumed_from"].endswith(f"checkpoint-{step}")  # it did resume, it did not start over
    assert max(h["step"] for h in log["log_history"]) == 12
    full_weights, cut_weights = _weights(full_out), _weights(cut_out)
    assert full_weights.keys() == cut_weights.keys()
    for name, value in full_weights.items():
        # Same rows in the same order, the optimizer, scheduler and RNG state restored, the same
        # thread count: the weights come out bit for bit equal here; 1e-6 leaves room for rounding.
        assert torch.allclose(value, cut_weights[name], rtol=0, atol=1e-6), name


def test_torchrun_two_processes_match_one_process(student, tmp_path):
    examples = _examples(8)
    tokenizer = load_tokenizer(student)
    features = tokenize_rows(build_rows(Dataset.from_list(examples), "dss"), tokenizer, "causal", 128, 96)
    assert len({len(f["input_ids"]) for f in features if f["task"] == 0}) == 1
    assert len({len(f["input_ids"]) for f in features if f["task"] == 1}) == 1
    # fp32 on both sides: the test compares DDP's arithmetic with one process, which bf16 rounding would blur.
    settings = {"epochs": 3.0, "learning_rate": 1e-3, "bf16": False}
    # One process, 8 rows per step.
    single = train_student(
        DatasetDict({"train": Dataset.from_list(examples)}),
        load_config("tiny", batch_size=8, **settings),
        "dss",
        tmp_path / "one",
        init=str(student),
    )
    # Two processes, 4 rows each per step: the same 8 rows per step, gradients averaged by DDP (gloo on CPU).
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    command = _worker(tmp_path, tmp_path / "two", student, {"batch_size": 4, **settings}, examples, launcher=launcher)
    started = time.monotonic()
    done = subprocess.run(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"torchrun run: {time.monotonic() - started:.0f} s")
    two = json.loads((tmp_path / "two" / "train_log.json").read_text())["log_history"]
    one_losses = [h["loss"] for h in single.log_history if "loss" in h]
    two_losses = [h["loss"] for h in two if "loss" in h]
    assert len(one_losses) == len(two_losses) == 6
    assert "backend: gloo" in done.stdout  # CPU DDP: transformers/accelerate picked gloo by themselves
    # Each process holds 2 label and 2 rationale rows of equal lengths, so the mean of the two
    # processes' losses IS the one-process loss, and DDP's averaged gradient its gradient: the runs
    # differ only by float rounding (other matmul shapes and thread counts, gloo's summation order).
    # Measured: equal before the first update and within 2e-6 (relative) after five; Adam divides
    # each gradient coordinate by its own running scale, which can enlarge rounding on coordinates
    # whose gradient is near zero, so 1e-4 leaves a 50x margin and is still 1000x below the change
    # of the loss from one step to the next (a wrong batch split or a missing gradient sync fails it).
    assert two_losses[0] == pytest.approx(one_losses[0], rel=1e-5)
    assert two_losses == pytest.approx(one_losses, rel=1e-4)
    assert abs(one_losses[-1] - one_losses[0]) > 0.1 * one_losses[0]  # it did learn: the check has teeth
    two_tasks = [(h["loss_label"], h["loss_rationale"]) for h in two if "loss" in h]  # averaged over processes
    one_tasks = [(h["loss_label"], h["loss_rationale"]) for h in single.log_history if "loss" in h]
    assert [v for pair in two_tasks for v in pair] == pytest.approx([v for pair in one_tasks for v in pair], abs=2e-3)
