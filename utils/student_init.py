"""What a student starts from: its checkpoint and the adapters it may train.

- ``prepare_student_init``: the checkpoint, a layer subset of ``config.student_model`` (DistilBERT's
  trick, causal students) or the model itself, with its vocabulary cut to the run's texts when
  ``config.prune_vocab`` is set (``prune_student_vocab``, exact: the kept tokens' logits are the
  unpruned model's).
- LoRA (``config.lora``): ``lora_settings`` reads the option, ``apply_lora`` wraps the model in
  ``peft`` adapters so only they train, ``merge_lora`` folds them back before saving, so a saved
  student is always a plain model.

``utils.student`` (the trainer) builds on these; nothing here imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from utils.prompting import (
    LABEL_PREFIX,
    LTR_SEPARATOR,
    MODES,
    RATIONALE_PREFIX,
    build_rows,
    check_family,
    format_prompt,
)
from utils.tasks import resolve_task

LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": None}  # targets None: per model, see lora_targets


def prepare_student_init(config, dataset=None) -> str:
    """The checkpoint a student starts from: a layer subset of ``student_model`` when
    ``student_layers`` is set (causal students), else ``student_model`` itself; with
    ``config.prune_vocab`` and a ``dataset``, that checkpoint with its vocabulary cut to the
    dataset's tokens (``prune_student_vocab``)."""
    from filelock import FileLock

    from utils.models import cache_dir, make_layer_subset_student

    source = str(config.student_model)
    if config.student_family == "causal" and config.student_layers:
        safe = source.strip("/").replace("/", "--")
        out = cache_dir() / "students" / f"{safe}-{config.student_layers}layers"
        out.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(out) + ".lock"):  # several processes (torchrun) may ask at once; one builds it
            source = str(make_layer_subset_student(config.student_model, config.student_layers, out))
    if config.prune_vocab and dataset is not None:
        source = prune_student_vocab(source, dataset, config)
    return source


def vocabulary_texts(dataset, tokenizer, config) -> list[str]:
    """Every text a student of ``config`` reads or learns for ``dataset``: the prompts of both tasks
    in every split, formatted as the student sees them, and the targets of every mode in the splits
    it learns from. Test targets are left out: a vocabulary cut to the test answers' tokens would
    already know something about them."""
    texts = [LABEL_PREFIX, RATIONALE_PREFIX, LTR_SEPARATOR]
    chat, task = config.chat_template, resolve_task(config.task)
    for name in dataset:
        split = dataset[name]
        for prefix in (LABEL_PREFIX, RATIONALE_PREFIX):
            texts += [format_prompt(tokenizer, prefix + text, config.student_family, chat) for text in split["input"]]
        if name == "test":
            continue
        for mode in MODES:
            try:
                rows = build_rows(split, mode, config.label_source, config.rationale_answer, task)
            except (ValueError, KeyError):  # a mode this split cannot train (no rationales, no teacher labels)
                continue
            texts += [row["target"] for row in rows]
    return texts


def prune_student_vocab(source: str, dataset, config, out_dir: str | Path | None = None) -> str:
    """``source`` with its vocabulary cut to ``vocabulary_texts`` (``utils.vocab.prune_vocabulary``),
    built once per source and token set under the cache folder (or written to ``out_dir``, uncached,
    for a source that lives no longer than its pruned copy); the logits at the kept tokens are the
    unpruned model's. Students with a byte-level BPE (SmolLM2, GPT-2, Llama 3), Unigram (T5's
    SentencePiece) or WordLevel tokenizer (the tiny T5); others raise a ValueError."""
    import hashlib

    from filelock import FileLock

    from utils.models import cache_dir, load_tokenizer
    from utils.vocab import kept_token_ids, prune_vocabulary

    if (Path(source) / "vocab_map.json").exists():
        return source  # pruned already
    tokenizer = load_tokenizer(source)
    texts = vocabulary_texts(dataset, tokenizer, config)
    if out_dir is not None:
        return str(prune_vocabulary(source, texts, out_dir))
    kept = kept_token_ids(tokenizer, texts)
    key = hashlib.sha256(json.dumps([str(source), kept]).encode()).hexdigest()[:12]
    safe = Path(str(source).rstrip("/")).name
    out = cache_dir() / "students" / f"{safe}-vocab{len(kept)}-{key}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "vocab_map.json").exists():
            prune_vocabulary(source, texts, out)
    return str(out)


def unwrap_model(model):
    """The transformers model inside the wrappers training adds (DDP, DataParallel, a PEFT model)."""
    import torch

    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif callable(getattr(model, "get_base_model", None)):
            model = model.get_base_model()
        else:
            return model


def lora_settings(config) -> dict | None:
    """The LoRA settings ``config.lora`` asks for (``True``: the defaults), or None."""
    from utils.config import validate_student_options

    validate_student_options(config)
    spec = config.lora
    if not spec:
        return None
    return {**LORA_DEFAULTS, **({} if spec is True else spec)}


def lora_targets(model) -> list[str]:
    """Default LoRA target modules: the query and value projections (``q_proj``/``v_proj`` in
    Llama-like models, ``q``/``v`` in T5), as in the LoRA paper."""
    names = {name.rsplit(".", 1)[-1] for name, _ in unwrap_model(model).named_modules()}
    for pair in (["q_proj", "v_proj"], ["q", "v"]):
        if set(pair) <= names:
            return pair
    raise ValueError("Could not find query/value projections to adapt in this model. Name them with "
                     "config.lora = {'targets': [...]} (module names, e.g. 'c_attn').")


def apply_lora(model, family: str, settings: dict | bool = True):
    """Wrap ``model`` in LoRA adapters (``peft``); only the adapters train."""
    from peft import LoraConfig, TaskType, get_peft_model

    check_family(family)
    settings = {**LORA_DEFAULTS, **({} if settings is True else settings)}
    lora_config = LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                             target_modules=list(settings["targets"] or lora_targets(model)),
                             task_type=TaskType.CAUSAL_LM if family == "causal" else TaskType.SEQ_2_SEQ_LM)
    return get_peft_model(model, lora_config)


def merge_lora(model):
    """A plain transformers model with the LoRA adapters folded into its weights (no-op without LoRA)."""
    return model.merge_and_unload() if callable(getattr(model, "merge_and_unload", None)) else model
