"""Shipping the student: an export folder with a model card, and a predictor that loads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from utils.student import LABEL_PREFIX, RATIONALE_PREFIX

CARD = """---
license: apache-2.0
base_model: {base_model}
tags:
- distilling-step-by-step
- {family}
metrics:
- accuracy
---

# {name}

A student model distilled step by step (Hsieh et al., 2023) by the course repository
*distilling step-by-step*. Mode: `{mode}`. Task: `{task}`.

## Use

Prompt format: `{label_prefix}<problem>` gives the answer (an equation for math tasks);
`{rationale_prefix}<problem>` gives the rationale it learned from the teacher.{causal_note}

```python
from utils.deploy import Predictor
predictor = Predictor.from_pretrained("{out_dir}")
predictor.predict(["Tom has 5 apples and buys 3 more. How many apples does he have?"])
```

## Results

{metrics}

## Limits

Trained on a small synthetic task on a CPU for a course demo: it is a teaching artefact, not a
general-purpose model. Check its answers.
"""


def export_student(checkpoint: str | Path, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Copy weights (safetensors), tokenizer and prompt format to ``out_dir`` with a model card."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    meta_path = checkpoint / "student_meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{checkpoint} is not a trained student (no student_meta.json): train one in notebook 03.")
    meta = json.loads(meta_path.read_text())
    from utils.models import load_model, load_tokenizer

    model = load_model(checkpoint, meta["family"])
    tokenizer = load_tokenizer(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    shutil.copy(meta_path, out_dir / "student_meta.json")
    lines = [f"- {k}: {v}" for k, v in (metrics or {}).items()] or ["(not evaluated)"]
    card = CARD.format(base_model=meta.get("base_model") or meta.get("source_model", "unknown"), family=meta["family"], name=out_dir.name,
                       mode=meta["mode"], task=meta["task"], label_prefix=meta["label_prefix"],
                       rationale_prefix=meta["rationale_prefix"], out_dir=out_dir, metrics="\n".join(lines),
                       causal_note=_prompt_note(meta))
    (out_dir / "README.md").write_text(card)
    return out_dir


def _prompt_note(meta: dict) -> str:
    if meta["family"] != "causal":
        return ""
    if meta.get("chat_template"):
        return " Causal students trained with the chat template read the prompt as a user message."
    return " Causal students read the prompt followed by a newline."


class Predictor:
    """Answers (and, on request, rationales) from an exported student."""

    def __init__(self, model, tokenizer, meta: dict):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Predictor:
        from utils.models import load_model, load_tokenizer

        path = Path(path)
        meta_path = path / "student_meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{path} is not an exported student (no student_meta.json).")
        meta = json.loads(meta_path.read_text())
        return cls(load_model(path, meta["family"]), load_tokenizer(path), meta)

    def predict(self, inputs: str | list[str], rationale: bool = False, batch_size: int = 16) -> list[dict]:
        """``[{"label": ...}]`` per input, plus ``"rationale"`` when asked."""
        from utils.evaluation import generate_predictions

        items = [inputs] if isinstance(inputs, str) else list(inputs)
        family = self.meta["family"]
        labels = generate_predictions(self.model, self.tokenizer, items, family,
                                      self.meta.get("label_prefix", LABEL_PREFIX), 32, batch_size)
        results = [{"label": label} for label in labels]
        if rationale:
            why = generate_predictions(self.model, self.tokenizer, items, family,
                                       self.meta.get("rationale_prefix", RATIONALE_PREFIX), 96, batch_size)
            for result, text in zip(results, why):
                result["rationale"] = text
        return results
