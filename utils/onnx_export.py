"""ONNX for onnxruntime: a causal student's decoder graph with a key/value cache, greedy decoding
on it (``OnnxPredictor``, ``Predictor``'s interface) and a check against PyTorch (``compare_onnx``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from utils.config import atomic_write_text
from utils.export import (
    BATCH_SIZE,
    Predictor,
    can_explain,
    predict_with,
    read_meta,
)
from utils.prompting import LABEL_PREFIX, encode_source

# what an ONNX folder needs besides the graph: the student's description, prompt format and tokenizer
COPIED_FILES = ("student_meta.json", "prompt_format.json", "metrics.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja", "config.json")


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
    meta = read_meta(out_dir)
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
    tmp = path.with_name(f".model.tmp-{os.getpid()}.onnx")  # the exporter may want the .onnx suffix
    try:
        with torch.no_grad():
            torch.onnx.export(_onnx_wrapper(model).eval(), (ids, mask, past), str(tmp), dynamo=True,
                              opset_version=18, input_names=["input_ids", "attention_mask", *kv_names],
                              output_names=["logits", *[n.replace("past", "present") for n in kv_names]],
                              dynamic_shapes=({0: b, 1: s}, {0: b, 1: t}, [{0: b, 2: p} for _ in kv_names]),
                              external_data=False, verbose=False)
        os.replace(tmp, path)  # a reader never finds half a graph under the final name
    finally:
        tmp.unlink(missing_ok=True)
    for name in COPIED_FILES:
        if (out_dir / name).exists():
            atomic_write_text(onnx_dir / name, (out_dir / name).read_text(encoding="utf-8"))
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
        return cls(session, load_tokenizer(onnx_dir), read_meta(onnx_dir), config)

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
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(ids, max_new_tokens)

    def generate_ids(self, prompt_ids: list[list[int]], max_new_tokens: int) -> list[str]:
        """Greedy continuations of prompts given as token ids, one batch (left-padded here)."""
        import numpy as np

        tok = self.tokenizer
        ids, attention = left_pad(prompt_ids, tok.pad_token_id)
        batch = ids.shape[0]
        mask = np.concatenate([np.zeros((batch, 1), np.int64), attention], axis=1)
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

    @property
    def can_explain(self) -> bool:
        """Whether this student learned to write rationales (``predict(rationale=True)`` works)."""
        return can_explain(self.meta)

    def _run(self, items: list[str], prefix: str, tokens: int, batch_size: int, first_line: bool) -> list[str]:
        """Greedy outputs for ``prefix + item``, prompts encoded and cut as in training."""
        family, chat = self.meta["family"], bool(self.meta.get("chat_template"))
        limit = self.meta.get("max_source_length")
        out = []
        for start in range(0, len(items), batch_size):
            ids = [encode_source(self.tokenizer, prefix + x, family, chat, limit)[0]
                   for x in items[start : start + batch_size]]
            texts = self.generate_ids(ids, tokens)
            out.extend(t.split("\n")[0].strip() if first_line else t for t in texts)
        return out

    def predict(self, inputs: str | list[str], rationale: bool = False, batch_size: int = BATCH_SIZE) -> list[dict]:
        """As ``Predictor.predict`` (a rationale only from a ``dss`` student)."""
        return predict_with(self._run, self.meta, inputs, rationale, batch_size)


def left_pad(prompt_ids: list[list[int]], pad_id: int):
    """``(ids, attention_mask)`` int64 arrays of the prompts padded on the left to one length.

    Done here rather than by the tokenizer so that its ``padding_side`` (shared with whoever else
    holds it) is never changed."""
    import numpy as np

    width = max(len(x) for x in prompt_ids)
    ids = np.full((len(prompt_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompt_ids), width), dtype=np.int64)
    for row, x in enumerate(prompt_ids):
        if x:
            ids[row, width - len(x) :] = x
            mask[row, width - len(x) :] = 1
    return ids, mask


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
    meta = predictor.meta
    prefix = meta.get("label_prefix", LABEL_PREFIX)
    chat, limit = bool(meta.get("chat_template")), meta.get("max_source_length")
    ids, mask = left_pad([encode_source(predictor.tokenizer, prefix + x, "causal", chat, limit)[0]
                          for x in inputs[:BATCH_SIZE]], predictor.tokenizer.pad_token_id)
    with torch.no_grad():
        enc = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        reference = predictor.model(**enc, position_ids=positions).logits[:, -1].float().numpy()
    onnx_logits = onnx.logits(ids, mask)

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
