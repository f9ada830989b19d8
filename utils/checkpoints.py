"""Checkpoint housekeeping for a student run: which ``checkpoint-<step>`` folder a run resumes from,
and removing the ones a run killed while saving left half-written.

The folders are the Hugging Face ``Trainer``'s (``output_dir/checkpoints``, see
``utils.student.training_arguments``); this module only reads and removes them, so it needs no torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _complete_checkpoint(path: Path) -> bool:
    """Whether a checkpoint folder was written to the end (``trainer_state.json`` is written last)."""
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    weights = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
    return (path / "optimizer.pt").exists() and (path / "scheduler.pt").exists() and any(
        (path / w).exists() for w in weights)


def last_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-<step>`` folder, or None; a run killed while saving leaves
    an incomplete one behind, which is skipped."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if _complete_checkpoint(path):
            return str(path)
    return None


def drop_incomplete_checkpoints(checkpoint_dir: str | Path) -> None:
    """Remove the ``checkpoint-*`` folders a killed run left half-written, so a resumed run
    neither picks one nor trips over it when the Trainer rotates checkpoints."""
    for path in Path(checkpoint_dir).glob("checkpoint-*"):
        if path.is_dir() and not _complete_checkpoint(path):
            shutil.rmtree(path, ignore_errors=True)
