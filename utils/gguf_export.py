"""GGUF for llama.cpp and Ollama: the file, an Ollama Modelfile, and a check against PyTorch.

- ``export_gguf``: a causal (Llama-architecture) export as ``student.gguf``, written with the
  ``gguf`` library's ``GGUFWriter``.
- ``modelfile_text`` / ``write_modelfile``: Ollama Modelfiles that prompt it as it was trained.
- ``compare_gguf``: the GGUF read back by transformers and by llama.cpp, against the PyTorch student.
"""

# Hand-written on purpose: neither the ``gguf`` package nor the llama-cpp-python wheel ships
# llama.cpp's HF->GGUF converter (convert_hf_to_gguf.py), so the few tensors and keys are mapped here.

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from utils.config import atomic_write_text
from utils.export import BATCH_SIZE, EXAMPLE_INPUT, LABEL_TOKENS, RATIONALE_TOKENS, Predictor, read_meta
from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX, format_prompt


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

    from utils.models import load_model, load_tokenizer

    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
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
    vocab = _gguf_vocab(out_dir, config.vocab_size)
    gguf_dir = Path(gguf_dir) if gguf_dir else out_dir / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    path = gguf_dir / "student.gguf"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        _add_gguf_metadata(writer, config, load_tokenizer(out_dir), meta, out_dir.name, vocab, dtype)
        _add_gguf_tensors(writer, model, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)  # a reader never finds half a GGUF file under the final name
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _add_gguf_metadata(writer, config, tokenizer, meta: dict, name: str, vocab: tuple, dtype: str) -> None:
    """The llama hyperparameters and the byte-level BPE tokenizer, as llama.cpp's keys."""
    import gguf

    tokens, types, merges, pre = vocab
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_type("model")
    writer.add_name(name)
    writer.add_license("apache-2.0")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    special = {"add_bos_token_id": tokenizer.bos_token_id, "add_eos_token_id": tokenizer.eos_token_id,
               "add_unk_token_id": tokenizer.unk_token_id, "add_pad_token_id": tokenizer.pad_token_id}
    for method, value in special.items():
        if value is not None:
            getattr(writer, method)(int(value))
    writer.add_add_bos_token(False)  # the student was trained on prompts without a BOS token
    writer.add_add_space_prefix(False)
    if meta.get("chat_template") and getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _add_gguf_tensors(writer, model, dtype: str) -> None:
    """Every weight under its GGUF name, q and k reordered for llama.cpp's rotary embedding."""
    import gguf
    import numpy as np

    config = model.config
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
            data = permute_for_gguf(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_for_gguf(data, config.num_key_value_heads)
        if dtype == "f16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(data))


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
    meta, gguf_path = read_meta(Path(out_dir)), Path(gguf_path)
    paths = []
    for rationale, name in ((False, "Modelfile"), (True, "Modelfile.rationale")):
        path = gguf_path.parent / name
        paths.append(atomic_write_text(path, modelfile_text(meta, gguf_path.name, rationale)))
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.evaluation import generate_predictions
    from utils.llamacpp import open_gguf

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
    from_gguf = generate_predictions(hf_model, hf_tokenizer, inputs, "causal", prefix, LABEL_TOKENS, BATCH_SIZE,
                                     max_source_length=meta.get("max_source_length"))
    seconds["transformers_gguf"] = time.perf_counter() - start

    start = time.perf_counter()
    # n_threads_batch too: its default (every core) spins against other work on a busy machine
    llm = open_gguf(gguf_path, n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
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
    llm = open_gguf(gguf_path, n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
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
