"""Shipping the student: an export folder with a model card, and a predictor that loads it.

- ``export_student``: safetensors weights (LoRA adapters merged), tokenizer, ``student_meta.json``,
  ``prompt_format.json`` (how to prompt it), ``metrics.json`` and a model card (``README.md``, a
  ``huggingface_hub.ModelCard`` with its evaluation results). ``push_to_hub`` uploads the folder
  (token from ``HF_TOKEN``).
- ``Predictor``: the label, and for a ``dss`` student on request the rationale, for a batch of
  inputs; it decodes exactly as ``utils.evaluation.evaluate_student`` does, so it gives the
  evaluation's answers.

The other formats live beside it: ``utils.gguf_export`` (llama.cpp, Ollama), ``utils.onnx_export``
(onnxruntime); the HTTP service and the Gradio demo in ``utils.serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from utils.config import atomic_write_json, atomic_write_text
from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX, format_prompt

LABEL_TOKENS = 32  # new tokens for a label: evaluate_student's max_new_tokens
RATIONALE_TOKENS = 128  # new tokens for a rationale: evaluate_student's rationale_tokens
BATCH_SIZE = 16  # the evaluation's batch size (config.eval_batch_size on tiny)
EXAMPLE_INPUT = "Tom has 5 apples and buys 3 more. How many apples does he have?"
RATIONALE_MODES = ("dss",)  # the modes whose students learned the [rationale] task


# --- reading an export -----------------------------------------------------------------------------


def read_meta(path: str | Path) -> dict:
    """The ``student_meta.json`` of a trained or exported student, or a clear error if there is none."""
    meta_path = Path(path) / "student_meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a trained or exported student (no student_meta.json): "
                                "train one in notebook 03, export it with export_student.")
    return json.loads(meta_path.read_text())


def can_explain(meta: dict) -> bool:
    """Whether the student described by ``meta`` learned to write rationales (only ``dss`` does)."""
    return meta.get("mode") in RATIONALE_MODES


def rationale_refusal(meta: dict) -> str:
    """Why a student not trained to write rationales cannot give one, naming its mode."""
    return (f"This student was trained in mode {meta.get('mode')!r}, which learns the label only; only "
            f"{' or '.join(repr(m) for m in RATIONALE_MODES)} students learn the {RATIONALE_PREFIX.strip()} task. "
            "Ask for the label alone (rationale false), or export a dss student.")


def check_can_explain(meta: dict) -> None:
    """Raise a ValueError (``rationale_refusal``) when the student was not trained to write rationales."""
    if not can_explain(meta):
        raise ValueError(rationale_refusal(meta))


def predict_with(generate, meta: dict, inputs: str | list[str], rationale: bool, batch_size: int) -> list[dict]:
    """``[{"label": ...}]`` per input (plus ``"rationale"`` when asked) through ``generate(items, prefix,
    max_tokens, batch_size, first_line)``: the one ``predict`` of the PyTorch and the ONNX predictor."""
    items = check_inputs(inputs)
    if rationale:
        check_can_explain(meta)  # before any work: a label-only student cannot explain
    labels = generate(items, meta.get("label_prefix", LABEL_PREFIX), LABEL_TOKENS, batch_size, True)
    results = [{"label": label} for label in labels]
    if rationale:
        why = generate(items, meta.get("rationale_prefix", RATIONALE_PREFIX), RATIONALE_TOKENS, batch_size, False)
        for result, text in zip(results, why):
            result["rationale"] = text
    return results


def check_inputs(inputs: str | list[str]) -> list[str]:
    """``inputs`` as a non-empty list of strings (a single string is a batch of one)."""
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    if not items:
        raise ValueError("predict() needs at least one input.")
    wrong = [i for i, x in enumerate(items) if not isinstance(x, str)]
    if wrong:
        raise TypeError(f"Every input must be a string; item(s) {wrong} are not.")
    return items


# --- the model card --------------------------------------------------------------------------------


def report_metrics(report: dict | str | Path | None, mode: str) -> dict:
    """The metrics of the ``mode`` student in a run's ``report.json`` (notebook 04), flat."""
    if report is None:
        return {}
    if not isinstance(report, dict):
        path = Path(report)
        if not path.exists():
            return {}
        report = json.loads(path.read_text())
    evaluation = report.get("evaluation") or {}
    student = (evaluation.get("students") or {}).get(mode)
    if not student:
        return {}
    metrics = {"accuracy": student["accuracy"], "ci95": list(student.get("ci95") or []), "n_test": student.get("n"),
               "inference": "label (greedy)", "split": "test"}
    teacher = evaluation.get("teacher") or {}
    if "accuracy" in teacher:
        metrics["teacher_accuracy"] = teacher["accuracy"]
    costs = (evaluation.get("costs") or {}).get("student") or {}
    for key in ("latency_ms_p50", "throughput_batched"):
        if costs.get(key) is not None:
            metrics[key] = costs[key]
    return metrics


def _task_spec(task: str):
    """The task's spec, or None for a task this course does not know (a card is still written)."""
    from utils.tasks import get_task

    try:
        return get_task(task)
    except ValueError:
        return None


def card_data(meta: dict, metrics: dict, name: str, license_id: str = "apache-2.0"):
    """The model card's metadata (``huggingface_hub.ModelCardData``), its accuracy as an ``EvalResult``."""
    from huggingface_hub import EvalResult, ModelCardData

    spec = _task_spec(meta["task"])
    pipeline = "text-generation" if meta["family"] == "causal" else "text2text-generation"
    results = None
    if "accuracy" in metrics:
        results = [EvalResult(
            task_type=pipeline, task_name=spec.description if spec else meta["task"],
            dataset_type=spec.hub_id if spec and spec.hub_id else meta["task"], dataset_name=meta["task"],
            dataset_split=metrics.get("split", "test"), metric_type="accuracy",
            metric_value=round(float(metrics["accuracy"]), 4),
            metric_name=f"test accuracy, {metrics.get('inference', 'label')} (n={metrics.get('n_test')})")]
    return ModelCardData(
        license=license_id, base_model=meta.get("base_model") or meta.get("source_model", "unknown"),
        library_name="transformers", pipeline_tag=pipeline, language=["en"],
        tags=["distilling-step-by-step", "knowledge-distillation", meta["family"], meta["task"]],
        datasets=[spec.hub_id] if spec and spec.hub_id else None,
        metrics=["accuracy"] if results else None, model_name=name if results else None, eval_results=results)


def _card_metric_lines(metrics: dict) -> list[str]:
    """The Results section: accuracy with its interval, the teacher's, latency, anything else given."""
    lines = []
    if "accuracy" in metrics:
        ci = metrics.get("ci95") or []
        interval = f" (95% bootstrap interval {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)" if len(ci) == 2 else ""
        lines.append(f"- test accuracy: {100 * metrics['accuracy']:.1f}%{interval} on {metrics.get('n_test')} problems, "
                     "label prompt, greedy")
    if "teacher_accuracy" in metrics:
        lines.append(f"- teacher accuracy on the same items (few-shot chain of thought): "
                     f"{100 * metrics['teacher_accuracy']:.1f}%")
    if metrics.get("latency_ms_p50") is not None:
        lines.append(f"- latency per example at batch 1 (p50, the evaluation machine): {metrics['latency_ms_p50']:.0f} ms")
    for key, value in metrics.items():
        if key not in ("accuracy", "ci95", "n_test", "inference", "split", "teacher_accuracy", "latency_ms_p50",
                       "throughput_batched"):
            lines.append(f"- {key}: {value}")
    return lines or ["(not evaluated)"]


CARD_BODY = """
# {name}

A student model trained by the course repository *distilling step-by-step* (Hsieh et al., 2023,
arXiv 2305.02301), where a teacher LLM writes rationales and a small model learns from them.
{learned}

- Mode: `{mode}` (label source: {label_source}); family: {family}; base model: `{base_model}`
- Task: `{task}`: {task_description}
- Data: {data_license}
- Parameters: {parameters:,}

## Intended use

Answering problems of the task it was trained on, in the format it was trained on, and showing how
distillation trades size for accuracy in a course. Prompt format (also in `prompt_format.json`):
`{label_prefix}<problem>` gives the answer (an equation for math tasks){rationale_use}.{prompt_note}

```python
from utils.export import Predictor  # from the course repository
predictor = Predictor.from_pretrained("{out_name}")
predictor.predict(["{example}"], rationale={rationale_flag})
```

Without the course code: load it with `transformers` (`AutoModelFor{auto}.from_pretrained`), build
the prompt as above, and decode greedily ({label_tokens} new tokens for a label, first line only).

## Results

{metrics}

## Limits

- Trained on a small task ({task}) on modest hardware for a course: a teaching artefact, not a
  general-purpose assistant. Outside its task's format its answers mean nothing.
- A rationale (from a `dss` student) imitates a teacher that is itself often wrong; a fluent
  rationale is not a proof. Check its answers before relying on them.{no_rationale}
- English only; no safety tuning beyond what its base model had.
"""


def _prompt_note(meta: dict) -> str:
    """How a causal student's prompt ends (a newline, or a chat turn)."""
    if meta["family"] != "causal":
        return ""
    if meta.get("chat_template"):
        return " This student was trained with the chat template: the prompt is a user message."
    return " A causal student reads the prompt followed by a newline, then writes its answer."


def _card_text(meta: dict, metrics: dict, name: str, parameters: int) -> str:
    """The Markdown body of the model card (everything below the metadata block)."""
    spec = _task_spec(meta["task"])
    description = spec.description if spec else "(a task this course does not know)"
    data_license = spec.license if spec else "see the task's source"
    label_prefix = meta.get("label_prefix", LABEL_PREFIX)
    rationale_prefix = meta.get("rationale_prefix", RATIONALE_PREFIX)
    explains = can_explain(meta)
    learned = {
        "dss": f"This one is the paper's method: it learned both the label (prompt prefix `{label_prefix}`) and the "
               f"teacher's rationale (`{rationale_prefix}`), in one multi-task loss.",
        "standard": "This one is the paper's first baseline: fine-tuned on the gold labels only, no rationales.",
        "distill": "This one is the paper's second baseline: trained on the teacher's labels only, no rationales.",
    }.get(meta["mode"], f"Training mode: {meta['mode']}.")
    return CARD_BODY.format(
        name=name, label_prefix=label_prefix, mode=meta["mode"], label_source=meta.get("label_source", "gold"),
        family=meta["family"], base_model=meta.get("base_model") or meta.get("source_model", "unknown"),
        task=meta["task"], task_description=description, data_license=data_license, learned=learned,
        rationale_use=(f", and `{rationale_prefix}<problem>` gives the rationale it learned from the teacher"
                       if explains else ""),
        no_rationale="" if explains else (f"\n- This `{meta['mode']}` student never learned to write rationales: "
                                          "asking it for one is an error."),
        parameters=parameters, prompt_note=_prompt_note(meta), out_name=name, example=EXAMPLE_INPUT,
        auto="CausalLM" if meta["family"] == "causal" else "Seq2SeqLM", label_tokens=LABEL_TOKENS,
        rationale_flag=explains, metrics="\n".join(_card_metric_lines(metrics)))


def model_card(meta: dict, metrics: dict, name: str, parameters: int, license_id: str = "apache-2.0"):
    """The model card of an export (a ``huggingface_hub.ModelCard``; ``str(card)`` is its README.md)."""
    from huggingface_hub import ModelCard

    data = card_data(meta, metrics, name, license_id)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_card_text(meta, metrics, name, parameters)}")


def prompt_format(tokenizer, meta: dict) -> dict:
    """How to prompt an exported student, for users of other engines (written to prompt_format.json)."""
    family, chat = meta["family"], bool(meta.get("chat_template"))
    label, rationale = meta.get("label_prefix", LABEL_PREFIX), meta.get("rationale_prefix", RATIONALE_PREFIX)
    template = "{prefix}{input}" + ("\n" if family == "causal" else "")
    return {
        "family": family, "label_prefix": label, "rationale_prefix": rationale, "chat_template": chat,
        "rationale_trained": can_explain(meta), "max_source_length": meta.get("max_source_length"),
        "template": "chat template of the tokenizer, user turn: {prefix}{input}" if chat else template,
        "label": {"max_new_tokens": LABEL_TOKENS, "decoding": "greedy", "keep": "first line"},
        "rationale": {"max_new_tokens": RATIONALE_TOKENS, "decoding": "greedy", "keep": "all"},
        "example": format_prompt(tokenizer, label + EXAMPLE_INPUT, family, chat),
    }


# --- writing an export -----------------------------------------------------------------------------


def _load_for_export(checkpoint: Path, family: str):
    """The student as a plain transformers model: a checkpoint that holds LoRA adapters (a peft
    folder with ``adapter_config.json``) is loaded on its base model and merged."""
    from utils.models import load_model

    if not (checkpoint / "adapter_config.json").exists():
        return load_model(checkpoint, family)
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

    cls = AutoPeftModelForCausalLM if family == "causal" else AutoPeftModelForSeq2SeqLM
    return cls.from_pretrained(str(checkpoint)).merge_and_unload()


def _publish_dir(built: Path, out_dir: Path) -> list[Path]:
    """Make ``out_dir`` a link to the finished folder ``built`` (a sibling), replacing what it was;
    returns the folders of the replaced export, for the caller to remove.

    A directory cannot be renamed over a non-empty one, so the final name is a relative symlink
    (as ``runs/latest`` is): ``os.replace`` of a link is atomic, so a reader finds the old export
    or the new one at every moment. A real folder left by older code is moved aside first (the
    one moment without an export) and removed once the link stands.
    """
    link = out_dir.with_name(f".{out_dir.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    link.symlink_to(built.name)
    previous = _earlier_export(out_dir)
    aside = None
    if out_dir.exists() and not out_dir.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, aside / out_dir.name)
    try:
        os.replace(link, out_dir)
    except BaseException:
        if aside is not None:  # put the old folder back before reporting the failure
            os.replace(aside / out_dir.name, out_dir)
            shutil.rmtree(aside, ignore_errors=True)
        link.unlink(missing_ok=True)
        raise
    return [old for old in (previous, aside) if old is not None]


def _earlier_export(out_dir: Path) -> Path | None:
    """The folder an existing ``out_dir`` link points at, if an earlier ``export_student`` made it
    (a link the user made to somewhere else is left alone, and so is its target)."""
    if not out_dir.is_symlink():
        return None
    target = Path(os.path.realpath(out_dir))
    ours = target.parent == out_dir.parent.resolve() and target.name.startswith(f".{out_dir.name}.export-")
    return target if ours else None


def export_student(checkpoint: str | Path, out_dir: str | Path, metrics: dict | None = None,
                   report: dict | str | Path | None = None, license_id: str = "apache-2.0") -> Path:
    """Write an exported student to ``out_dir`` and return it.

    ``report`` is a run's ``report.json`` (a path or the dict; default: the one of the run folder
    that holds ``checkpoint``, i.e. ``<run>/student/<mode>``); its notebook-04 metrics go into the
    card and ``metrics.json``. ``metrics`` adds or overrides entries. A LoRA checkpoint is merged.

    The export is built in a hidden sibling folder and only then published under ``out_dir`` (see
    ``_publish_dir``): an export that fails midway leaves the previous one complete and in place.
    """
    from utils.models import count_parameters, load_tokenizer

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    meta = read_meta(checkpoint)
    if report is None:
        report = checkpoint.parent.parent / "report.json"
    merged = {**report_metrics(report, meta["mode"]), **(metrics or {})}
    model = _load_for_export(checkpoint, meta["family"])
    tokenizer = load_tokenizer(checkpoint)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        built.chmod(0o755)  # mkdtemp makes it private; an export is meant to be read by others
        model.save_pretrained(built, safe_serialization=True)
        tokenizer.save_pretrained(built)
        atomic_write_json(built / "student_meta.json", meta)
        atomic_write_json(built / "prompt_format.json", prompt_format(tokenizer, meta))
        atomic_write_json(built / "metrics.json", merged)
        card = model_card(meta, merged, out_dir.name, count_parameters(model), license_id)
        atomic_write_text(built / "README.md", str(card))
        replaced = _publish_dir(built, out_dir)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    for old in replaced:  # only once the new export stands under the final name
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def hub_token() -> str:
    """The Hugging Face token from the environment (``HF_TOKEN``, else ``HUGGING_FACE_HUB_TOKEN``)."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise RuntimeError("No Hugging Face token in the environment. Create a write token at "
                           "https://huggingface.co/settings/tokens and set it as HF_TOKEN (in Colab: the "
                           "key icon, Secrets, HF_TOKEN, then os.environ['HF_TOKEN'] = userdata.get('HF_TOKEN')).")
    return token


def push_to_hub(out_dir: str | Path, repo_id: str, private: bool = True, commit_message: str | None = None) -> str:
    """Upload an export folder to the Hugging Face Hub as a model repository; returns its URL.

    The token is read from the environment only (see ``hub_token``) and never printed. The
    ``onnx/`` and ``gguf/`` folders stay local (upload them separately if you want them there)."""
    from huggingface_hub import HfApi

    out_dir = Path(out_dir)
    read_meta(out_dir)
    if not (out_dir / "README.md").exists():
        raise FileNotFoundError(f"{out_dir} has no model card: export it with export_student first.")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'user-or-org/name', got {repo_id!r}.")
    api = HfApi(token=hub_token())
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(out_dir.resolve()), repo_id=repo_id, repo_type="model",
                      commit_message=commit_message or f"Upload {out_dir.name} (distilling step-by-step course)",
                      ignore_patterns=["*.tmp*", "onnx/*", "gguf/*"])
    return str(url)


# --- the predictor ---------------------------------------------------------------------------------


class Predictor:
    """Answers (and, for a ``dss`` student, rationales on request) from an exported student."""

    def __init__(self, model, tokenizer, meta: dict, path: Path | None = None):
        self.model, self.tokenizer, self.meta, self.path = model, tokenizer, meta, path
        self.metrics = {}
        if path is not None and (path / "metrics.json").exists():
            self.metrics = json.loads((path / "metrics.json").read_text())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None) -> Predictor:
        """Load an export folder written by ``export_student`` (or a trained checkpoint)."""
        from utils.models import load_model, load_tokenizer

        path = Path(path)
        meta = read_meta(path)
        model = load_model(path, meta["family"])
        if device:
            model = model.to(device)
        return cls(model.eval(), load_tokenizer(path), meta, path)

    @property
    def can_explain(self) -> bool:
        """Whether this student learned to write rationales (``predict(rationale=True)`` works)."""
        return can_explain(self.meta)

    def _generate(self, items: list[str], prefix: str, tokens: int, batch_size: int, first_line: bool) -> list[str]:
        from utils.evaluation import generate_predictions

        # the training length limit travels with the export, so a long input is cut as in training
        return generate_predictions(self.model, self.tokenizer, items, self.meta["family"], prefix, tokens,
                                    batch_size, first_line=first_line,
                                    max_source_length=self.meta.get("max_source_length"))

    def predict(self, inputs: str | list[str], rationale: bool = False, batch_size: int = BATCH_SIZE) -> list[dict]:
        """``[{"label": ...}]`` per input, plus ``"rationale"`` when asked (``dss`` students only:
        others raise ValueError); greedy, in batches of ``batch_size``, decoded as
        ``evaluate_student`` decodes (same answers on the same batches)."""
        return predict_with(self._generate, self.meta, inputs, rationale, batch_size)

    def describe(self) -> dict:
        """What the service's ``/metadata`` shows: the model, its task, its prompt format and metrics."""
        from utils.models import count_parameters

        meta = self.meta
        return {"name": self.path.name if self.path else "student", "family": meta["family"], "mode": meta["mode"],
                "task": meta["task"], "base_model": meta.get("base_model"), "parameters": count_parameters(self.model),
                "label_prefix": meta.get("label_prefix", LABEL_PREFIX),
                "rationale_prefix": meta.get("rationale_prefix", RATIONALE_PREFIX), "can_explain": self.can_explain,
                "max_source_length": meta.get("max_source_length"), "metrics": self.metrics}
