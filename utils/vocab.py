"""Vocabulary pruning for a student: keep only the tokens a task uses, exactly.

The ``tiny`` student (SmolLM2-135M cut to 6 layers) spends about 28M of its 50M parameters on
the 49,152 x 576 tied embedding / LM head, while a task's text uses a few thousand tokens.

- ``kept_token_ids``: the ids a corpus needs, closed so that the pruned tokenizer stays exact.
- ``prune_tokenizer_json``: a ``tokenizers`` JSON reduced to those ids, renumbered 0..K-1.
- ``prune_vocabulary``: a checkpoint with that tokenizer and the matching embedding rows.

Why the pruned tokenizer is exact: byte-level BPE splits text into pre-tokens, maps each to byte
symbols and then repeatedly applies the lowest-ranked merge among its adjacent pairs. The pruned
merge table keeps, in their original order, every merge whose result is kept, and the kept set is
closed under "a kept token made by merge ``a b`` keeps ``a`` and ``b``". If all of a text's
original tokens are kept, every intermediate token of their derivation is kept too, so every merge
the original applied is in the pruned table; the pruned table is a subset, so that merge is still
the lowest-ranked applicable one, and the derivation and the ids (renumbered) are identical. Other
text falls back to smaller kept pieces, single bytes at worst, so anything still encodes; the
model then reads different tokens than the original would have, so only the corpus is exact.
The embedding rows are copied unchanged, so the logits at kept ids are the original ones.

Seq2seq students (T5 and the project's tiny T5) have other tokenizer models, pruned by the same
functions: SentencePiece **Unigram** (T5, flan-t5) and **WordLevel** (``make_t5_student``). Unigram
picks the segmentation of highest total score among its pieces; a text's chosen pieces are all kept,
so they are still the best segmentation among the fewer pieces left, and the ids are the same
(renumbered). Ties between equal-score segmentations could in principle resolve otherwise, so
``prune_vocabulary`` re-encodes every text with the pruned tokenizer and refuses a pruning that
changes one. Every single-character piece is kept too, so other text still encodes (Unigram maps
what it cannot spell to ``<unk>``, as the original does for characters it lacks). WordLevel keeps
the corpus's words; any other word becomes ``<unk>``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# config / generation_config fields that hold token ids: kept, and renumbered with the vocabulary
TOKEN_ID_FIELDS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "unk_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)
# files prune_vocabulary writes itself; everything else small in the source folder is copied
WRITTEN_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab_map.json")
# stale after pruning (weights, slow-tokenizer files, other engines' exports): never copied
SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".index.json")
SKIPPED_FILES = ("vocab.json", "merges.txt", "added_tokens.json")
VOCAB_MAP = "vocab_map.json"


def _has_byte_level(pre_tokenizer: dict | None) -> bool:
    """Whether a pre-tokenizer (or one in a Sequence of them) maps text to byte-level symbols."""
    if not isinstance(pre_tokenizer, dict):
        return False
    parts = pre_tokenizer.get("pretokenizers") or []
    return pre_tokenizer.get("type") == "ByteLevel" or any(_has_byte_level(p) for p in parts)


def _tokenizer_json(tokenizer) -> dict:
    """The ``tokenizers`` JSON of a fast tokenizer, or a clear error if it cannot be pruned exactly:
    byte-level BPE (then the 256 byte symbols spell any text; a SentencePiece-style BPE, Llama 2 or
    Mistral, would need its byte-fallback tokens kept instead), Unigram (T5's SentencePiece) or WordLevel."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    data = json.loads(backend.to_str()) if backend is not None else {}
    model = data.get("model", {})
    kind = model.get("type")
    if kind == "BPE" and "merges" in model and _has_byte_level(data.get("pre_tokenizer")):
        return data
    if kind in ("Unigram", "WordLevel"):
        return data
    kind = (kind or type(tokenizer).__name__) + ("" if kind != "BPE" else " without a ByteLevel pre-tokenizer")
    raise ValueError(
        f"Vocabulary pruning supports byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen style), Unigram "
        f"(T5's SentencePiece) and WordLevel tokenizers; this tokenizer is {kind}. "
        "Train the student without pruning."
    )


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    """The merges as pairs: newer tokenizers.json files store lists, older ones "a b" strings."""
    return [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in model["merges"]]


def _merge_result(a: str, b: str, model: dict) -> str:
    """The token a merge makes (a continuing-subword prefix on ``b`` is dropped, as tokenizers does)."""
    prefix = model.get("continuing_subword_prefix") or ""
    return a + (b[len(prefix) :] if prefix and b.startswith(prefix) else b)


def _processor_ids(processor: dict | None, new_id=None) -> tuple[dict | None, set[int]]:
    """The post-processor with its token ids mapped by ``new_id`` (if given), and the ids it names.

    Template processors list special tokens with ``ids``; Roberta/Bert ones as ``[token, id]``."""
    if not isinstance(processor, dict):
        return processor, set()
    found, out = set(), dict(processor)
    if "processors" in out:  # a Sequence of processors
        parts = [_processor_ids(p, new_id) for p in out["processors"]]
        out["processors"] = [p for p, _ in parts]
        found.update(*(ids for _, ids in parts))
    for name, spec in out.get("special_tokens", {}).items():
        found.update(spec["ids"])
        if new_id:
            out["special_tokens"][name] = {**spec, "ids": [new_id[i] for i in spec["ids"]]}
    for key in ("sep", "cls"):
        if isinstance(out.get(key), list):
            found.add(out[key][1])
            if new_id:
                out[key] = [out[key][0], new_id[out[key][1]]]
    return out, found


def kept_token_ids(tokenizer, texts: Iterable[str], extra_ids: Iterable[int] = ()) -> list[int]:
    """The sorted (old) ids a pruned vocabulary must keep for ``texts`` to tokenize exactly.

    That is: every id ``texts`` encode to, with and without the tokenizer's special tokens; every
    special or added token; every byte-level base symbol (so any text still encodes); ``extra_ids``
    (e.g. a config's eos id); and the closure under BPE merges (a kept token made by merge ``a b``
    keeps ``a`` and ``b``, recursively), which is what makes the pruned merge table exact. Unigram:
    the unknown piece and every single-character piece instead of bytes and merges; WordLevel: the
    unknown token. Pass the
    texts as the model reads and writes them (formatted prompts, prefixes, targets, rationales).
    Raises ValueError for a tokenizer that is not byte-level BPE.
    """
    from tokenizers.pre_tokenizers import ByteLevel

    data = _tokenizer_json(tokenizer)
    model = data["model"]
    vocab = model["vocab"]
    kept = set(extra_ids)
    for text in texts:
        kept.update(tokenizer.encode(text, add_special_tokens=False))
        kept.update(tokenizer.encode(text, add_special_tokens=True))
    kept.update(t["id"] for t in data.get("added_tokens", []))
    kept.update(tokenizer.all_special_ids)
    kept.update(_processor_ids(data.get("post_processor"))[1])
    if model["type"] == "Unigram":  # pieces are [piece, score] pairs, the id is the position
        if model.get("unk_id") is not None:
            kept.add(model["unk_id"])
        kept.update(i for i, (piece, _) in enumerate(vocab) if len(piece) == 1)  # any text still encodes
        return sorted(kept)
    if model["type"] == "WordLevel":
        if model.get("unk_token") in vocab:
            kept.add(vocab[model["unk_token"]])
        return sorted(kept)
    # the byte alphabet the tokenizer has (SmolLM2 lacks the 21 bytes valid UTF-8 never uses)
    kept.update(vocab[c] for c in ByteLevel.alphabet() if c in vocab)

    made_by: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merge_pairs(model):
        made_by.setdefault(_merge_result(a, b, model), []).append((a, b))
    token_of = {i: t for t, i in vocab.items()}
    stack = [token_of[i] for i in kept if i in token_of]
    while stack:  # every merge that makes a kept token is kept, so its parts must be too
        for pair in made_by.get(stack.pop(), ()):
            for part in pair:
                if vocab[part] not in kept:
                    kept.add(vocab[part])
                    stack.append(part)
    return sorted(kept)


def prune_tokenizer_json(data: dict, kept: list[int]) -> dict:
    """A copy of a ``tokenizers`` JSON holding only the ``kept`` ids (closed, as ``kept_token_ids``
    returns them), renumbered 0..K-1 in old-id order, with the merges whose result is kept (BPE),
    the kept pieces and their scores (Unigram) or the kept words (WordLevel)."""
    new_id = {old: new for new, old in enumerate(kept)}
    model = dict(data["model"])
    vocab = model["vocab"]
    if model["type"] == "Unigram":  # [piece, score] pairs, the id is the position
        model["vocab"] = [vocab[i] for i in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:  # BPE and WordLevel: token -> id
        model["vocab"] = {t: new_id[i] for t, i in sorted(vocab.items(), key=lambda item: item[1]) if i in new_id}
    if model["type"] == "BPE":
        string_form = any(isinstance(m, str) for m in model["merges"])
        merges = [(a, b) for a, b in _merge_pairs(model) if vocab.get(_merge_result(a, b, model)) in new_id]
        missing = sorted({p for pair in merges for p in pair if vocab.get(p) not in new_id})
        if missing:
            raise ValueError(
                f"The kept ids are not closed under the BPE merges (missing parts {missing[:5]}): "
                "compute them with kept_token_ids."
            )
        model["merges"] = [" ".join(m) if string_form else list(m) for m in merges]
    pruned = {**data, "model": model}
    pruned["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in data.get("added_tokens", [])]
    pruned["post_processor"] = _processor_ids(data.get("post_processor"), new_id)[0]
    return pruned


def _remap_ids(config, new_id: dict[int, int]) -> None:
    """Renumber the token-id fields of a model or generation config in place."""
    for field in TOKEN_ID_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int):
            setattr(config, field, new_id[value])
        elif isinstance(value, list):
            setattr(config, field, [new_id[i] for i in value])


def _config_ids(*configs) -> set[int]:
    ids = set()
    for config in configs:
        for field in TOKEN_ID_FIELDS:
            value = getattr(config, field, None) if config is not None else None
            ids.update([value] if isinstance(value, int) else value if isinstance(value, list) else [])
    return ids


def _select_embedding_rows(model, kept: list[int]) -> int:
    """Keep the embedding (and untied LM head) rows of ``kept``, in that order, in place; returns
    the old number of rows."""
    import torch

    try:
        embed = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embed = None
    weight = getattr(embed, "weight", None)
    if weight is None or weight.ndim != 2:
        raise ValueError(
            f"Vocabulary pruning found no token embedding in {type(model).__name__}: it supports "
            "models with an input embedding matrix (Llama, SmolLM2, Qwen, T5 style)."
        )
    if weight.shape[0] <= kept[-1]:
        raise ValueError(
            f"The model's token embedding has {weight.shape[0]} rows but its tokenizer uses id "
            f"{kept[-1]}: the model and tokenizer in this folder do not belong together."
        )
    rows = torch.tensor(kept, device=weight.device)
    # padding_idx only masks a row's gradient, but keep it on the same token, as a reload would
    padding = kept.index(embed.padding_idx) if getattr(embed, "padding_idx", None) in kept else None
    new_embed = torch.nn.Embedding(
        len(kept), weight.shape[1], padding_idx=padding, dtype=weight.dtype, device=weight.device
    )
    new_embed.weight.data.copy_(weight.data[rows])
    head = model.get_output_embeddings()
    model.set_input_embeddings(new_embed)
    if head is None:
        return weight.shape[0]
    if head.weight is weight:  # tied: one matrix serves both, as in the source
        head.weight = new_embed.weight
    else:
        head.weight = torch.nn.Parameter(head.weight.data[rows].clone())
        if getattr(head, "bias", None) is not None:
            head.bias = torch.nn.Parameter(head.bias.data[rows].clone())
    head.out_features = len(kept)
    return weight.shape[0]


def _copy_extra_files(source: Path, target: Path) -> None:
    """Copy what else the source folder holds (student_meta.json, prompt files, the model card, the
    chat template), so that a pruned export is still an export."""
    for path in source.iterdir():
        name = path.name
        if path.is_file() and name not in WRITTEN_FILES + SKIPPED_FILES and not name.endswith(SKIPPED_SUFFIXES):
            shutil.copy2(path, target / name)


def _pruned_tokenizer_config(source: Path, new_id: dict[int, int]) -> dict | None:
    """``tokenizer_config.json`` with the ids of ``added_tokens_decoder`` renumbered (if it has any)."""
    path = source / "tokenizer_config.json"
    if not path.exists():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        config["added_tokens_decoder"] = {
            str(new_id[int(i)]): spec for i, spec in config["added_tokens_decoder"].items() if int(i) in new_id
        }
    return config


def check_same_tokens(tokenizer, pruned_json: dict, texts: list[str], kept: list[int]) -> None:
    """Raise ValueError unless the pruned tokenizer (``pruned_json``) encodes every text to the
    original's ids, renumbered: the guarantee pruning gives, checked rather than assumed."""
    from tokenizers import Tokenizer

    pruned = Tokenizer.from_str(json.dumps(pruned_json))
    original = tokenizer.backend_tokenizer
    for special in (False, True):
        before = original.encode_batch(texts, add_special_tokens=special)
        after = pruned.encode_batch(texts, add_special_tokens=special)
        for text, old, new in zip(texts, before, after):
            if [kept[i] for i in new.ids] != old.ids:
                raise ValueError(f"The pruned tokenizer splits {text[:60]!r} differently from the original "
                                 f"({old.tokens[:8]} against {new.tokens[:8]}); train this student unpruned.")


def prune_vocabulary(
    model_dir: str | Path, texts: Iterable[str], out_dir: str | Path, extra_ids: Iterable[int] = ()
) -> Path:
    """Save to ``out_dir`` the checkpoint of ``model_dir`` (causal or seq2seq) with only the tokens ``texts`` need.

    The kept tokens (``kept_token_ids``, plus the config's special ids and ``extra_ids``) get new
    ids 0..K-1 in old-id order; the embedding rows (and LM head rows, if not tied) are selected;
    ``vocab_size`` and the special ids of ``config`` and ``generation_config`` are renumbered; the
    tokenizer is rewritten at the ``tokenizer.json`` level, so ``AutoTokenizer.from_pretrained``
    loads it with no custom code. ``vocab_map.json`` records the kept old ids, K and the source.
    Other small files (``student_meta.json``, the model card, ...) are copied unchanged. The folder
    is built beside ``out_dir`` and renamed into place, so a crash never leaves a half folder there.
    Every text is re-encoded with the pruned tokenizer before anything is written (``check_same_tokens``).
    Raises ValueError for a tokenizer it cannot prune exactly or a model without an embedding.
    """
    from utils.config import atomic_write_json, atomic_write_text
    from utils.models import load_model, load_tokenizer, resolve_model

    # a bundled name becomes its converted folder; a hub id stays an id (no local files to copy)
    model_dir, out_dir = Path(resolve_model(model_dir)), Path(out_dir)
    from transformers import AutoConfig

    tokenizer = load_tokenizer(model_dir)
    data = _tokenizer_json(tokenizer)  # before loading the model: an unsupported tokenizer fails fast
    family = "seq2seq" if getattr(AutoConfig.from_pretrained(model_dir), "is_encoder_decoder", False) else "causal"
    model = load_model(model_dir, family)
    special = _config_ids(model.config, getattr(model, "generation_config", None))
    texts = list(texts)
    kept = kept_token_ids(tokenizer, texts, extra_ids=set(extra_ids) | special)
    new_id = {old: new for new, old in enumerate(kept)}
    tokenizer_json = prune_tokenizer_json(data, kept)
    check_same_tokens(tokenizer, tokenizer_json, texts, kept)
    old_size = _select_embedding_rows(model, kept)
    model.config.vocab_size = len(kept)
    _remap_ids(model.config, new_id)
    if getattr(model, "generation_config", None) is not None:
        _remap_ids(model.generation_config, new_id)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        if model_dir.is_dir():
            _copy_extra_files(model_dir, tmp)
        tokenizer.save_pretrained(tmp / "original-tokenizer")  # its tokenizer_config.json, wherever it came from
        tokenizer_config = _pruned_tokenizer_config(tmp / "original-tokenizer", new_id)
        shutil.rmtree(tmp / "original-tokenizer")
        atomic_write_text(tmp / "tokenizer.json", json.dumps(tokenizer_json, ensure_ascii=False))
        if tokenizer_config is not None:
            atomic_write_json(tmp / "tokenizer_config.json", tokenizer_config, ensure_ascii=False)
        atomic_write_json(
            tmp / VOCAB_MAP,
            {"source": str(model_dir), "original_vocab_size": old_size, "vocab_size": len(kept), "kept_ids": kept},
        )
        if len(load_tokenizer(tmp)) != len(kept):  # fail here, not when someone loads the folder
            raise RuntimeError(f"The pruned tokenizer in {tmp} does not have {len(kept)} tokens.")
        if out_dir.is_symlink():  # e.g. an export_student link: replace the link, not its target
            out_dir.unlink()
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
