"""What every study on the paper's data shares: its run config, the PaLM teacher on the test
items, the paper's own numbers to set an effect beside, and publishing a run without texts."""

from __future__ import annotations

import json
from pathlib import Path

PAPER_TASKS = ("svamp", "cqa", "esnli", "anli1")
# Settings per profile on top of the profile's own. tiny: sized for 2 CPU cores (about 90 minutes
# for the SVAMP study); paper: the profile's T5 v1.1 base, 20 epochs, lr 5e-5 (a GPU).
STUDY_SETTINGS = {
    "tiny": dict(student_layers=6, epochs=2.0, learning_rate=3e-4, batch_size=16, alpha=0.5,
                 max_source_length=128, max_target_length=128, eval_batch_size=32),
    "colab": {},
    "paper": {},
}

# Checkpoint and validation every half epoch; the lowest validation loss wins (early stopping).
SVAMP_OPTIONS = {"save_steps": 0.5, "rationale_answer": True}


def study_config(task: str = "svamp", profile: str = "tiny", **overrides):
    """The run config of a study: the profile, the study settings for it, the task's data in full."""
    from utils.config import PROFILES, load_config

    if task not in PAPER_TASKS:
        raise ValueError(f"Unknown task {task!r} for a study on the paper's data. Tasks: {', '.join(PAPER_TASKS)}.")
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}. Valid profiles: {', '.join(PROFILES)}.")
    # The committed studies trained padded rows over the whole vocabulary, denormals kept; a study keeps
    # one recipe from its first cell to its last, so the tiny profile's speed levers stay off unless a
    # design sets them.
    values = dict(task=task, n_train=None, n_test=None, max_ops=None, teacher_cache_seed=None, pack_rows=False,
                  prune_vocab=False, flush_denormal=False, **STUDY_SETTINGS[profile], **SVAMP_OPTIONS)
    return load_config(profile, **{**values, **overrides})



def paper_teacher(paper_root: str | Path, task: str, out_dir: str | Path, ids=None) -> dict:
    """The PaLM teacher on the test items, from the authors' released outputs (parsed the
    course's way), with its predictions saved beside the cells. ``ids``: only these items of the
    authors' test split (a study's own held-out test set), each of which must exist."""
    from utils.evaluation import evaluate_teacher_records, save_predictions
    from utils.paper_data import load_paper_rationales

    records = load_paper_rationales(paper_root, task, "test")
    if ids is not None:
        wanted = {str(i) for i in ids}
        records = [r for r in records if str(r["id"]) in wanted]
        missing = wanted - {str(r["id"]) for r in records}
        if missing:
            raise ValueError(f"{len(missing)} test ids have no teacher record in the authors' {task} test split "
                             f"(e.g. {sorted(missing)[:3]}): ids of another split or task?")
    scored = evaluate_teacher_records(records)
    save_predictions(scored["predictions"], Path(out_dir) / "teacher_test.jsonl")
    return {"model": "PaLM 540B, few-shot CoT (the authors' released outputs)", "accuracy": scored["accuracy"],
            "ci95": scored["ci95"], "n": scored["n"], "predictions": "teacher_test.jsonl"}



# data): standard fine-tuning and distilling step by step, accuracy %. Only tasks this course studies.
PAPER_TABLE1 = {"svamp": (62.63, 65.50)}


def paper_reference(task: str) -> dict:
    """``paper_effect`` (a sentence) and ``paper_difference`` (a fraction, step-by-step minus
    standard) for ``task`` from ``PAPER_TABLE1``; both None for a task without a reference."""
    if task not in PAPER_TABLE1:
        return {"paper_effect": None, "paper_difference": None}
    standard, dss = PAPER_TABLE1[task]
    return {"paper_effect": f"Hsieh et al. 2023, Table 1 (T5-base, all data): standard {standard:.2f}, "
                            f"step-by-step {dss:.2f} ({dss - standard:+.1f} points)",
            "paper_difference": round((dss - standard) / 100, 4)}



def publish_study(run_dir: str | Path, dest: str | Path, skip_dirs: tuple[str, ...] = ()) -> int:
    """Copy a study's run folder to ``dest`` (e.g. ``data/results/<name>``) without model weights
    and without the problem texts (the authors' data): ``report.json``, ``config.json``, figures,
    and every finished cell's ``cell.json`` and predictions (``input`` dropped). Top-level folders
    named in ``skip_dirs`` are left out too (a demo run's ``student``, ``export``, ...). Returns
    the cells copied."""
    import shutil

    from utils.config import atomic_write_text

    run_dir, dest = Path(run_dir), Path(dest)
    copied = 0
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_dir() or any(part in ("model", "checkpoints") for part in rel.parts) or rel.parts[0] in skip_dirs:
            continue
        target = dest / rel
        if path.suffix == ".jsonl" and path.name.startswith(("predictions_", "teacher_")):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            atomic_write_text(target, "".join(json.dumps({k: v for k, v in r.items() if k != "input"}) + "\n"
                                              for r in rows))
        elif path.suffix in (".json", ".png", ".md"):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied += path.name == "cell.json"
    return copied
