"""Shipping the student: an export folder with a model card, a predictor that loads it, and the
formats other engines read.

- ``export_student``: safetensors weights (LoRA adapters merged), tokenizer, ``student_meta.json``,
  ``prompt_format.json`` (how to prompt it), ``metrics.json`` and a model card (``README.md`` with
  the Hugging Face metadata block). ``push_to_hub`` uploads the folder (token from ``HF_TOKEN``).
- ``Predictor``: the label, and on request the rationale, for a batch of inputs; it decodes exactly
  as ``utils.evaluation.evaluate_student`` does, so it gives the evaluation's answers.
- ``export_gguf`` / ``write_modelfile`` / ``compare_gguf``: a GGUF file for llama.cpp and Ollama,
  written with the ``gguf`` library, and its check against the PyTorch student.
- ``export_onnx`` / ``OnnxPredictor`` / ``compare_onnx``: an ONNX graph with a key/value cache
  (``torch.onnx.export``) and greedy decoding in onnxruntime.
- ``gradio_demo``: a small web demo of a predictor.
The HTTP service lives in ``utils.serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from utils.student import LABEL_PREFIX, RATIONALE_PREFIX, format_prompt

LABEL_TOKENS = 32  # new tokens for a label: evaluate_student's max_new_tokens
RATIONALE_TOKENS = 128  # new tokens for a rationale: evaluate_student's rationale_tokens
BATCH_SIZE = 16  # the evaluation's batch size (config.eval_batch_size on tiny)
EXAMPLE_INPUT = "Tom has 5 apples and buys 3 more. How many apples does he have?"


# --- export and model card -----------------------------------------------------------------------


def _read_meta(path: Path) -> dict:
    meta_path = path / "student_meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a trained or exported student (no student_meta.json): "
                                "train one in notebook 03, export it with export_student.")
    return json.loads(meta_path.read_text())


def _load_for_export(checkpoint: Path, family: str):
    """The student as a plain transformers model: a checkpoint that holds LoRA adapters (a peft
    folder with ``adapter_config.json``) is loaded on its base model and merged."""
    from utils.models import load_model

    if not (checkpoint / "adapter_config.json").exists():
        return load_model(checkpoint, family)
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

    cls = AutoPeftModelForCausalLM if family == "causal" else AutoPeftModelForSeq2SeqLM
    return cls.from_pretrained(str(checkpoint)).merge_and_unload()


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


def _card_metadata(meta: dict, metrics: dict, name: str, license_id: str) -> dict:
    from utils.tasks import get_task

    try:
        spec = get_task(meta["task"])
    except ValueError:
        spec = None
    causal = meta["family"] == "causal"
    pipeline = "text-generation" if causal else "text2text-generation"
    data = {"license": license_id, "base_model": meta.get("base_model") or meta.get("source_model", "unknown"),
            "library_name": "transformers", "pipeline_tag": pipeline, "language": ["en"],
            "tags": ["distilling-step-by-step", "knowledge-distillation", meta["family"], meta["task"]]}
    if spec is not None and spec.hub_id:
        data["datasets"] = [spec.hub_id]
    if "accuracy" in metrics:
        data["metrics"] = ["accuracy"]
        data["model-index"] = [{"name": name, "results": [{
            "task": {"type": pipeline, "name": spec.description if spec else meta["task"]},
            "dataset": {"name": meta["task"], "type": spec.hub_id if spec and spec.hub_id else meta["task"],
                        "split": metrics.get("split", "test")},
            "metrics": [{"type": "accuracy", "value": round(float(metrics["accuracy"]), 4),
                         "name": f"test accuracy, {metrics.get('inference', 'label')} (n={metrics.get('n_test')})"}],
        }]}]
    return data


def _card_metric_lines(metrics: dict) -> list[str]:
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
from utils.deploy import Predictor  # from the course repository
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
  rationale is not a proof. Check its answers before relying on them.
- English only; no safety tuning beyond what its base model had.
"""


def model_card(meta: dict, metrics: dict, name: str, parameters: int, license_id: str = "apache-2.0") -> str:
    """The README.md of an export: the Hugging Face metadata block (YAML) and the card text."""
    import yaml

    from utils.tasks import get_task

    try:
        spec = get_task(meta["task"])
        description, data_license = spec.description, spec.license
    except ValueError:
        description, data_license = "(a task this course does not know)", "see the task's source"
    rationale_prefix = meta.get("rationale_prefix", RATIONALE_PREFIX)
    learned = {
        "dss": f"This one is the paper's method: it learned both the label (prompt prefix "
               f"`{meta.get('label_prefix', LABEL_PREFIX)}`) and the teacher's rationale (`{rationale_prefix}`), "
               "in one multi-task loss.",
        "standard": "This one is the paper's first baseline: fine-tuned on the gold labels only, no rationales.",
        "distill": "This one is the paper's second baseline: trained on the teacher's labels only, no rationales.",
    }.get(meta["mode"], f"Training mode: {meta['mode']}.")
    rationale_use = (f", and `{rationale_prefix}<problem>` gives the rationale it learned from the teacher"
                     if meta["mode"] == "dss" else "")
    header = yaml.safe_dump(_card_metadata(meta, metrics, name, license_id), sort_keys=False, allow_unicode=True)
    body = CARD_BODY.format(
        name=name, label_prefix=meta.get("label_prefix", LABEL_PREFIX), mode=meta["mode"],
        label_source=meta.get("label_source", "gold"), family=meta["family"],
        base_model=meta.get("base_model") or meta.get("source_model", "unknown"), task=meta["task"],
        task_description=description, data_license=data_license, learned=learned, rationale_use=rationale_use,
        parameters=parameters, prompt_note=_prompt_note(meta), out_name=name,
        example=EXAMPLE_INPUT, auto="CausalLM" if meta["family"] == "causal" else "Seq2SeqLM",
        label_tokens=LABEL_TOKENS, rationale_flag=meta["mode"] == "dss", metrics="\n".join(_card_metric_lines(metrics)))
    return f"---\n{header}---\n{body}"


def _prompt_note(meta: dict) -> str:
    if meta["family"] != "causal":
        return ""
    if meta.get("chat_template"):
        return " This student was trained with the chat template: the prompt is a user message."
    return " A causal student reads the prompt followed by a newline, then writes its answer."


def prompt_format(tokenizer, meta: dict) -> dict:
    """How to prompt an exported student, for users of other engines (written to prompt_format.json)."""
    family, chat = meta["family"], bool(meta.get("chat_template"))
    label, rationale = meta.get("label_prefix", LABEL_PREFIX), meta.get("rationale_prefix", RATIONALE_PREFIX)
    template = "{prefix}{input}" + ("\n" if family == "causal" else "")
    return {
        "family": family, "label_prefix": label, "rationale_prefix": rationale, "chat_template": chat,
        "template": "chat template of the tokenizer, user turn: {prefix}{input}" if chat else template,
        "label": {"max_new_tokens": LABEL_TOKENS, "decoding": "greedy", "keep": "first line"},
        "rationale": {"max_new_tokens": RATIONALE_TOKENS, "decoding": "greedy", "keep": "all"},
        "example": format_prompt(tokenizer, label + EXAMPLE_INPUT, family, chat),
    }


def export_student(checkpoint: str | Path, out_dir: str | Path, metrics: dict | None = None,
                   report: dict | str | Path | None = None, license_id: str = "apache-2.0") -> Path:
    """Write an exported student to ``out_dir`` and return it.

    ``report`` is a run's ``report.json`` (a path or the dict; default: the one of the run folder
    that holds ``checkpoint``, i.e. ``<run>/student/<mode>``); its notebook-04 metrics go into the
    card and ``metrics.json``. ``metrics`` adds or overrides entries. A LoRA checkpoint is merged.
    """
    from utils.models import count_parameters, load_tokenizer

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    meta = _read_meta(checkpoint)
    if report is None:
        report = checkpoint.parent.parent / "report.json"
    merged = {**report_metrics(report, meta["mode"]), **(metrics or {})}
    model = _load_for_export(checkpoint, meta["family"])
    tokenizer = load_tokenizer(checkpoint)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "student_meta.json").write_text(json.dumps(meta, indent=2))
    (tmp / "prompt_format.json").write_text(json.dumps(prompt_format(tokenizer, meta), indent=2))
    (tmp / "metrics.json").write_text(json.dumps(merged, indent=2, default=str))
    (tmp / "README.md").write_text(model_card(meta, merged, out_dir.name, count_parameters(model), license_id))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)  # a crash mid-export never leaves a half folder under the final name
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
    _read_meta(out_dir)
    if not (out_dir / "README.md").exists():
        raise FileNotFoundError(f"{out_dir} has no model card: export it with export_student first.")
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'user-or-org/name', got {repo_id!r}.")
    api = HfApi(token=hub_token())
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, repo_type="model",
                      commit_message=commit_message or f"Upload {out_dir.name} (distilling step-by-step course)",
                      ignore_patterns=["*.tmp*", "onnx/*", "gguf/*"])
    return str(url)


# --- the predictor -------------------------------------------------------------------------------


def _check_inputs(inputs) -> list[str]:
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    if not items:
        raise ValueError("predict() needs at least one input.")
    wrong = [i for i, x in enumerate(items) if not isinstance(x, str)]
    if wrong:
        raise TypeError(f"Every input must be a string; item(s) {wrong} are not.")
    return items


class Predictor:
    """Answers (and, on request, rationales) from an exported student."""

    def __init__(self, model, tokenizer, meta: dict, path: Path | None = None):
        self.model, self.tokenizer, self.meta, self.path = model, tokenizer, meta, path
        self.metrics = {}
        if path is not None and (path / "metrics.json").exists():
            self.metrics = json.loads((path / "metrics.json").read_text())

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None) -> Predictor:
        from utils.models import load_model, load_tokenizer

        path = Path(path)
        meta = _read_meta(path)
        model = load_model(path, meta["family"])
        if device:
            model = model.to(device)
        return cls(model.eval(), load_tokenizer(path), meta, path)

    def predict(self, inputs: str | list[str], rationale: bool = False, batch_size: int = BATCH_SIZE) -> list[dict]:
        """``[{"label": ...}]`` per input, plus ``"rationale"`` when asked; greedy, in batches of
        ``batch_size``, decoded as ``evaluate_student`` decodes (same answers on the same batches)."""
        from utils.evaluation import generate_predictions

        items = _check_inputs(inputs)
        family = self.meta["family"]
        labels = generate_predictions(self.model, self.tokenizer, items, family,
                                      self.meta.get("label_prefix", LABEL_PREFIX), LABEL_TOKENS, batch_size)
        results = [{"label": label} for label in labels]
        if rationale:
            why = generate_predictions(self.model, self.tokenizer, items, family,
                                       self.meta.get("rationale_prefix", RATIONALE_PREFIX), RATIONALE_TOKENS,
                                       batch_size, first_line=False)
            for result, text in zip(results, why):
                result["rationale"] = text
        return results

    def describe(self) -> dict:
        """What the service's ``/metadata`` shows: the model, its task, its prompt format and metrics."""
        from utils.models import count_parameters

        meta = self.meta
        return {"name": self.path.name if self.path else "student", "family": meta["family"], "mode": meta["mode"],
                "task": meta["task"], "base_model": meta.get("base_model"), "parameters": count_parameters(self.model),
                "label_prefix": meta.get("label_prefix", LABEL_PREFIX),
                "rationale_prefix": meta.get("rationale_prefix", RATIONALE_PREFIX), "metrics": self.metrics}


# --- GGUF for llama.cpp and Ollama ---------------------------------------------------------------


def permute_for_gguf(weight, n_heads: int):
    """A q or k projection (``[n_heads * head_dim, hidden]``, rows per head in Hugging Face's
    rotate-half order: the first half of a head's dimensions pairs with the second half) in the
    order llama.cpp's rotary embedding expects: the two members of each rotated pair on adjacent
    rows. Within each head, row ``j`` of the first half goes to row ``2j`` and row ``j`` of the
    second half to ``2j + 1``."""
    rows = weight.shape[0]
    head_dim = rows // n_heads
    return (weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _gguf_pre_tokenizer(pre: dict | None) -> str:
    """llama.cpp's name for a tokenizer.json pre-tokenizer, for the two forms this writer knows."""
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"  # the GPT-2 split regex: llama.cpp calls that pre-tokenizer "gpt-2"
    raise ValueError(f"This GGUF writer knows byte-level BPE tokenizers with the GPT-2 split (tokenizer.json "
                     f"pre_tokenizer ByteLevel), not {json.dumps(pre)[:200]}. Convert this model with llama.cpp's "
                     "convert_hf_to_gguf.py instead.")


def _gguf_vocab(out_dir: Path, vocab_size: int) -> tuple[list[str], list[int], list[str], str]:
    """Tokens, token types, merges and pre-tokenizer name from ``tokenizer.json``."""
    import gguf

    data = json.loads((out_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"GGUF export needs a BPE tokenizer; {out_dir} has {model.get('type')}.")
    pre = _gguf_pre_tokenizer(data.get("pre_tokenizer"))
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:  # embedding rows past the tokenizer's vocabulary
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges, pre


def export_gguf(out_dir: str | Path, gguf_dir: str | Path | None = None, dtype: str = "f32") -> Path:
    """Write a causal (Llama-architecture) exported student as a GGUF file for llama.cpp and Ollama.

    ``dtype``: ``f32`` (exact) or ``f16`` (half the size; norms stay f32). The q and k
    projections are reordered with ``permute_for_gguf``; with tied embeddings no separate output
    matrix is written (llama.cpp reuses the token embeddings). The file is ``student.gguf`` in
    ``gguf_dir`` (default ``out_dir/gguf``), a folder of its own so that the GGUF is read alone,
    with its own tokenizer, by whatever loads it.
    """
    import gguf
    import numpy as np

    from utils.models import load_model, load_tokenizer

    out_dir = Path(out_dir)
    meta = _read_meta(out_dir)
    if meta["family"] != "causal":
        raise ValueError("GGUF export is for causal students; a seq2seq (T5) student can be served with the "
                         "HTTP service or exported to ONNX instead.")
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}.")
    model = load_model(out_dir, "causal")
    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"This GGUF writer handles the llama architecture; {out_dir} is {config.model_type!r}. "
                         "Convert it with llama.cpp's convert_hf_to_gguf.py.")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"RoPE scaling {rope.get('rope_type')!r} is not supported by this writer.")
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    tokenizer = load_tokenizer(out_dir)
    tokens, types, merges, pre = _gguf_vocab(out_dir, config.vocab_size)
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads

    gguf_dir = Path(gguf_dir) if gguf_dir else out_dir / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    path = gguf_dir / "student.gguf"
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_type("model")
    writer.add_name(out_dir.name)
    writer.add_license("apache-2.0")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                        ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):
        if value is not None:
            getattr(writer, {"bos": "add_bos_token_id", "eos": "add_eos_token_id", "unk": "add_unk_token_id",
                             "pad": "add_pad_token_id"}[name])(int(value))
    writer.add_add_bos_token(False)  # the student was trained on prompts without a BOS token
    writer.add_add_space_prefix(False)
    if meta.get("chat_template") and getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"No GGUF name for tensor {hf_name!r}: this writer covers plain Llama models.")
        data = tensor.detach().float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_for_gguf(data, n_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_for_gguf(data, n_kv)
        if dtype == "f16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def modelfile_text(meta: dict, gguf_name: str = "student.gguf", rationale: bool = False) -> str:
    """An Ollama Modelfile that serves the student in its trained prompt format: the label (or
    the rationale) of ``{{ .Prompt }}``, greedy; labels stop at the end of their line."""
    if meta["family"] != "causal" or meta.get("chat_template"):
        raise ValueError("The Modelfile template covers causal students trained on the plain prompt format.")
    prefix = meta.get("rationale_prefix" if rationale else "label_prefix", RATIONALE_PREFIX if rationale else LABEL_PREFIX)
    if '"""' in prefix:
        raise ValueError(f"A prefix with triple quotes cannot go into a Modelfile template: {prefix!r}.")
    # Ollama's Modelfile parser keeps a newline inside quotes as it is (no escape sequences), so
    # the template ends with a real newline, exactly as format_prompt does, and "stop" is one too.
    lines = [f"# Ollama: ollama create NAME -f {'Modelfile.rationale' if rationale else 'Modelfile'}",
             f"# then: ollama run NAME \"{EXAMPLE_INPUT}\"",
             f"FROM ./{gguf_name}",
             f'TEMPLATE """{prefix}{{{{ .Prompt }}}}\n"""',
             "PARAMETER temperature 0",
             "PARAMETER top_k 1",
             f"PARAMETER num_predict {RATIONALE_TOKENS if rationale else LABEL_TOKENS}"]
    if not rationale:
        lines.append('PARAMETER stop "\n"')
    return "\n".join(lines) + "\n"


def render_modelfile_prompt(modelfile: str, text: str) -> str:
    """The prompt Ollama builds from a Modelfile written by ``modelfile_text`` for ``text``."""
    start = modelfile.index('TEMPLATE """') + len('TEMPLATE """')
    template = modelfile[start : modelfile.index('"""', start)]
    return template.replace("{{ .Prompt }}", text)


def write_modelfile(out_dir: str | Path, gguf_path: str | Path) -> list[Path]:
    """``Modelfile`` (labels) and ``Modelfile.rationale`` next to the GGUF of the export ``out_dir``."""
    meta, gguf_path = _read_meta(Path(out_dir)), Path(gguf_path)
    paths = []
    for rationale, name in ((False, "Modelfile"), (True, "Modelfile.rationale")):
        path = gguf_path.parent / name
        path.write_text(modelfile_text(meta, gguf_path.name, rationale))
        paths.append(path)
    return paths


def compare_gguf(out_dir: str | Path, gguf_path: str | Path, inputs: list[str], n_threads: int = 1) -> dict:
    """Check a GGUF file against the PyTorch student on ``inputs`` (label prompt, greedy).

    Three engines answer: the exported student (PyTorch), the GGUF loaded back by transformers
    (``gguf_file=``, its own tokenizer) and llama.cpp (``llama_cpp.Llama``, the engine inside
    Ollama). Returns the answers, the share of each engine's answers equal to PyTorch's, whether
    llama.cpp tokenizes the prompts as the student's tokenizer does, the largest difference of
    the next-token logits on the first prompt, and the seconds each engine took.
    """
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.evaluation import generate_predictions

    out_dir, gguf_path = Path(out_dir), Path(gguf_path)
    predictor = Predictor.from_pretrained(out_dir)
    meta, tokenizer = predictor.meta, predictor.tokenizer
    prefix = meta.get("label_prefix", LABEL_PREFIX)
    prompts = [format_prompt(tokenizer, prefix + text, "causal") for text in inputs]
    seconds = {}

    start = time.perf_counter()
    reference = [r["label"] for r in predictor.predict(inputs)]
    seconds["pytorch"] = time.perf_counter() - start

    start = time.perf_counter()
    hf_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if hf_tokenizer.pad_token is None:
        hf_tokenizer.pad_token = hf_tokenizer.eos_token
    hf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).eval()
    from_gguf = generate_predictions(hf_model, hf_tokenizer, inputs, "causal", prefix, LABEL_TOKENS, BATCH_SIZE)
    seconds["transformers_gguf"] = time.perf_counter() - start

    start = time.perf_counter()
    # n_threads_batch too: its default (every core) spins against other work on a busy machine
    llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
                logits_all=False, verbose=False)
    llama_tokens = [llm.tokenize(p.encode("utf-8"), add_bos=False, special=True) for p in prompts]
    hf_tokens = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    llama_answers = []
    for prompt in prompts:
        out = llm.create_completion(prompt, max_tokens=LABEL_TOKENS, temperature=0.0, top_k=1, stop=["\n"])
        llama_answers.append(out["choices"][0]["text"].strip().split("\n")[0].strip())
    seconds["llama_cpp"] = time.perf_counter() - start

    llm.close()
    # next-token logits on the first prompt, llama.cpp's against PyTorch's (logits_all keeps them)
    llm = Llama(model_path=str(gguf_path), n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
                logits_all=True, verbose=False)
    llm.eval(hf_tokens[0])
    llama_logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    llm.close()
    with torch.no_grad():
        torch_logits = predictor.model(torch.tensor([hf_tokens[0]])).logits[0, -1].float().numpy()

    def share(answers):
        return sum(a == b for a, b in zip(answers, reference)) / len(reference)

    return {"n": len(inputs), "pytorch": reference, "transformers_gguf": from_gguf, "llama_cpp": llama_answers,
            "agreement_transformers_gguf": share(from_gguf), "agreement_llama_cpp": share(llama_answers),
            "tokens_match": llama_tokens == hf_tokens,
            "logits_max_abs_diff": float(np.abs(llama_logits - torch_logits).max()),
            "same_next_token": int(llama_logits.argmax()) == int(torch_logits.argmax()),
            "seconds": seconds, "size_mb": gguf_path.stat().st_size / 2**20}


# --- ONNX ----------------------------------------------------------------------------------------


def _onnx_wrapper(model):
    """A module with plain tensors in and out around a causal LM: (new tokens, the attention mask
    over past + new tokens, the past keys and values per layer) -> (next-token logits, the keys
    and values to feed back)."""
    import torch
    from transformers import DynamicCache

    layers = model.config.num_hidden_layers

    class DecoderStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, past):
            # positions count real tokens only, so left padding and the dummy slot take none
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits[:, -1, :], *present)

    return DecoderStep()


def export_onnx(out_dir: str | Path, onnx_dir: str | Path | None = None) -> Path:
    """Export a causal student to ONNX (``torch.onnx.export``, the dynamo exporter) with a
    key/value cache, next to a copy of its tokenizer and prompt files; returns the folder
    (default ``out_dir/onnx``). Greedy decoding runs in ``OnnxPredictor``.

    The graph always takes a past of at least one position: decoding starts from one dummy
    position that the attention mask hides, so one graph serves the prompt and every later step.
    """
    import torch

    from utils.models import load_model, load_tokenizer

    out_dir = Path(out_dir)
    meta = _read_meta(out_dir)
    if meta["family"] != "causal":
        raise ValueError("ONNX export here covers causal students (one decoder graph with a cache). For a "
                         "seq2seq student export encoder and decoder separately (e.g. with optimum-onnx).")
    model = load_model(out_dir, "causal").eval()
    config = model.config
    n_kv = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layers = config.num_hidden_layers
    batch, new, past_len = 2, 5, 3
    ids = torch.randint(0, config.vocab_size, (batch, new))
    mask = torch.ones(batch, past_len + new, dtype=torch.long)
    mask[:, 0] = 0
    past = [torch.zeros(batch, n_kv, past_len, head_dim) for _ in range(2 * layers)]
    kv_names = [f"past.{i}.{part}" for i in range(layers) for part in ("key", "value")]
    b, s, t, p = (torch.export.Dim(n) for n in ("batch", "sequence", "total", "past"))
    onnx_dir = Path(onnx_dir) if onnx_dir else out_dir / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    path = onnx_dir / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(_onnx_wrapper(model).eval(), (ids, mask, past), str(path), dynamo=True, opset_version=18,
                          input_names=["input_ids", "attention_mask", *kv_names],
                          output_names=["logits", *[n.replace("past", "present") for n in kv_names]],
                          dynamic_shapes=({0: b, 1: s}, {0: b, 1: t}, [{0: b, 2: p} for _ in kv_names]),
                          external_data=False, verbose=False)
    for name in ("student_meta.json", "prompt_format.json", "metrics.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "chat_template.jinja", "config.json"):
        if (out_dir / name).exists():
            shutil.copy(out_dir / name, onnx_dir / name)
    load_tokenizer(out_dir)  # fails here, not at serving time, if the tokenizer cannot load
    return onnx_dir


class OnnxPredictor:
    """``Predictor``'s interface on an ONNX export: greedy decoding with the key/value cache in
    onnxruntime, the same prompts and post-processing as ``generate_predictions``."""

    def __init__(self, session, tokenizer, meta: dict, config: dict):
        self.session, self.tokenizer, self.meta, self.config = session, tokenizer, meta, config
        self.inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def from_pretrained(cls, onnx_dir: str | Path, threads: int | None = None) -> OnnxPredictor:
        import onnxruntime as ort

        from utils.models import load_tokenizer

        onnx_dir = Path(onnx_dir)
        if not (onnx_dir / "model.onnx").exists():
            raise FileNotFoundError(f"No model.onnx in {onnx_dir}: run export_onnx first.")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        config = json.loads((onnx_dir / "config.json").read_text())
        return cls(session, load_tokenizer(onnx_dir), _read_meta(onnx_dir), config)

    def logits(self, input_ids, attention_mask):
        """Next-token logits for a left-padded batch (no cache): to compare with PyTorch's."""
        import numpy as np

        past = self._empty_past(input_ids.shape[0])
        mask = np.concatenate([np.zeros((input_ids.shape[0], 1), np.int64), attention_mask], axis=1)
        return self.session.run(["logits"], self._feed(input_ids, mask, past))[0]

    def _empty_past(self, batch: int) -> list:
        import numpy as np

        n_kv = self.config["num_key_value_heads"]
        head_dim = self.config.get("head_dim") or self.config["hidden_size"] // self.config["num_attention_heads"]
        return [np.zeros((batch, n_kv, 1, head_dim), np.float32) for _ in range(2 * self.config["num_hidden_layers"])]

    def _feed(self, ids, mask, past) -> dict:
        import numpy as np

        return {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                **dict(zip(self.inputs[2:], past))}

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of ``prompts`` (already formatted), one batch."""
        import numpy as np

        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="np", padding=True, add_special_tokens=False)
        ids = enc["input_ids"].astype(np.int64)
        batch = ids.shape[0]
        mask = np.concatenate([np.zeros((batch, 1), np.int64), enc["attention_mask"].astype(np.int64)], axis=1)
        past = self._empty_past(batch)
        new = np.full((batch, max_new_tokens), tok.pad_token_id, dtype=np.int64)
        done = np.zeros(batch, dtype=bool)
        for step in range(max_new_tokens):
            logits, *past = self.session.run(None, self._feed(ids, mask, past))
            token = np.where(done, tok.pad_token_id, logits.argmax(-1))
            new[:, step] = token
            done |= token == tok.eos_token_id
            if done.all():
                break
            ids = token[:, None]
            mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]

    def predict(self, inputs: str | list[str], rationale: bool = False, batch_size: int = BATCH_SIZE) -> list[dict]:
        """As ``Predictor.predict``."""
        items = _check_inputs(inputs)
        family, chat = self.meta["family"], bool(self.meta.get("chat_template"))

        def run(prefix, tokens, first_line):
            out = []
            for start in range(0, len(items), batch_size):
                prompts = [format_prompt(self.tokenizer, prefix + x, family, chat) for x in items[start : start + batch_size]]
                texts = self.generate(prompts, tokens)
                out.extend(t.split("\n")[0].strip() if first_line else t for t in texts)
            return out

        results = [{"label": x} for x in run(self.meta.get("label_prefix", LABEL_PREFIX), LABEL_TOKENS, True)]
        if rationale:
            for result, text in zip(results, run(self.meta.get("rationale_prefix", RATIONALE_PREFIX),
                                                 RATIONALE_TOKENS, False)):
                result["rationale"] = text
        return results


def compare_onnx(out_dir: str | Path, onnx_dir: str | Path, inputs: list[str], repeats: int = 3,
                 threads: int | None = None) -> dict:
    """ONNX against PyTorch on ``inputs``: the largest logit difference (first batch), the share
    of equal labels, and the latency per example at batch 1 (median of ``repeats`` passes over
    the inputs) and batched, for both engines. ``threads``: onnxruntime's intra-op threads (give
    torch the same with ``torch.set_num_threads`` for a like-for-like timing)."""
    import statistics

    import numpy as np
    import torch

    predictor = Predictor.from_pretrained(out_dir)
    onnx = OnnxPredictor.from_pretrained(onnx_dir, threads=threads)
    tok = predictor.tokenizer
    tok.padding_side = "left"
    prompts = [format_prompt(tok, predictor.meta.get("label_prefix", LABEL_PREFIX) + x, "causal") for x in inputs]
    enc = tok(prompts[:BATCH_SIZE], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        reference = predictor.model(**enc, position_ids=positions).logits[:, -1].float().numpy()
    onnx_logits = onnx.logits(enc["input_ids"].numpy(), enc["attention_mask"].numpy())

    def timed(engine):
        engine.predict(inputs[:1])  # warm-up
        per_pass = []
        for _ in range(repeats):
            start = time.perf_counter()
            for text in inputs:
                engine.predict([text])
            per_pass.append((time.perf_counter() - start) / len(inputs))
        start = time.perf_counter()
        answers = [r["label"] for r in engine.predict(inputs)]
        return answers, 1000 * statistics.median(per_pass), len(inputs) / (time.perf_counter() - start)

    torch_answers, torch_ms, torch_rate = timed(predictor)
    onnx_answers, onnx_ms, onnx_rate = timed(onnx)
    return {"n": len(inputs), "logits_max_abs_diff": float(np.abs(onnx_logits - reference).max()),
            "agreement": sum(a == b for a, b in zip(onnx_answers, torch_answers)) / len(inputs),
            "pytorch": torch_answers, "onnx": onnx_answers,
            "pytorch_ms_per_example_batch1": torch_ms, "onnx_ms_per_example_batch1": onnx_ms,
            "pytorch_examples_per_s_batched": torch_rate, "onnx_examples_per_s_batched": onnx_rate,
            "size_mb": (Path(onnx_dir) / "model.onnx").stat().st_size / 2**20}


# --- a demo for people ---------------------------------------------------------------------------


def gradio_demo(predictor, examples: list[str] | None = None):
    """A Gradio interface around ``predictor`` (a ``Predictor`` or ``OnnxPredictor``): a problem in,
    the label and (when ticked) the rationale out. ``demo.launch(share=True)`` opens it from Colab."""
    import gradio as gr

    def answer(text: str, with_rationale: bool):
        if not text or not text.strip():
            return "(type a problem)", ""
        result = predictor.predict([text], rationale=with_rationale)[0]
        return result["label"], result.get("rationale", "")

    meta = predictor.meta
    return gr.Interface(
        fn=answer,
        inputs=[gr.Textbox(label="problem", lines=3), gr.Checkbox(label="show the rationale", value=True)],
        outputs=[gr.Textbox(label="answer"), gr.Textbox(label="rationale")],
        examples=[[x, True] for x in (examples or [EXAMPLE_INPUT])],
        title="Distilled student",
        description=f"A {meta['family']} student trained in mode `{meta['mode']}` on task `{meta['task']}` "
                    "(distilling step-by-step course). It answers in its training format; check its answers.",
        flagging_mode="never",
        cache_examples=False,
    )
