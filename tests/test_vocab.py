"""utils.vocab: pruning a student's vocabulary to a task's tokens, checked on the real bundled model (and small T5s).

One 2-layer cut of SmolLM2-135M-Instruct is pruned once per module to the tokens of a few dozen
arith problems (prompts as the student reads them, and rationale-like sentences); the tests then
check that the pruned tokenizer and model give exactly what the original gives on that corpus.
"""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from utils.loaders import load_task
from utils.models import count_parameters, load_model, load_tokenizer, make_layer_subset_student
from utils.prompting import LABEL_PREFIX, RATIONALE_PREFIX, format_prompt
from utils.vocab import kept_token_ids, prune_tokenizer_json, prune_vocabulary

BUNDLED = "smollm2-135m-instruct"
UNSEEN = "Zürich ∑ 漢字 — naïve café, 3½ km² at 20°C!"


def _corpus() -> list[str]:
    """What a student reads and writes on 40 arith problems: both prompts, targets, rationales."""
    rows = load_task("arith", "train", limit=40)
    texts = []
    for row in rows:
        for prefix in (LABEL_PREFIX, RATIONALE_PREFIX):
            texts.append(format_prompt(None, prefix + row["input"], "causal"))
        texts.append(row["equation"])
        texts.append(f"We combine the two amounts: {row['equation']} = {row['answer']}. The answer is {row['answer']}.")
    return texts


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """The original 2-layer student and its pruned copy: folders, tokenizers, models, kept ids."""
    root = tmp_path_factory.mktemp("vocab")
    base = make_layer_subset_student(BUNDLED, 2, root / "s2")
    meta = {"family": "causal", "mode": "dss", "task": "arith"}
    (base / "student_meta.json").write_text(json.dumps(meta))  # an export's extra file must travel along
    corpus = _corpus()
    out = prune_vocabulary(base, corpus, root / "s2-pruned")
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    return {
        "root": root,
        "base": base,
        "out": out,
        "corpus": corpus,
        "kept": kept,
        "tok": load_tokenizer(base),
        "new_tok": load_tokenizer(out),
        "model": load_model(base).eval(),
        "new_model": load_model(out).eval(),
    }


def test_corpus_tokenizes_exactly_as_before(pruned):
    kept, tok, new_tok = pruned["kept"], pruned["tok"], pruned["new_tok"]
    for text in pruned["corpus"]:
        for special in (False, True):
            new_ids = new_tok.encode(text, add_special_tokens=special)
            assert [kept[i] for i in new_ids] == tok.encode(text, add_special_tokens=special), text
        assert new_tok.decode(new_tok.encode(text, add_special_tokens=False)) == text


def test_new_combinations_of_corpus_words_tokenize_exactly(pruned):
    # byte-level BPE works on each pre-token (" word", " 19", "?") alone, so corpus words in a new
    # order must give the original tokens too
    words = sorted({w for text in pruned["corpus"] for w in re.findall(r" [A-Za-z]+(?![A-Za-z])", text)})
    numbers = sorted({n for text in pruned["corpus"] for n in re.findall(r" \d+(?!\d)", text)})
    kept, tok, new_tok = pruned["kept"], pruned["tok"], pruned["new_tok"]
    rng = random.Random(123)
    for _ in range(50):
        text = "".join(rng.sample(words, 6) + rng.sample(numbers, 2) + rng.sample(words, 3)) + "?"
        original = tok.encode(text, add_special_tokens=False)
        assert set(original) <= set(kept), text
        assert [kept[i] for i in new_tok.encode(text, add_special_tokens=False)] == original, text


def test_unseen_characters_still_encode_to_kept_pieces_and_round_trip(pruned):
    new_tok = pruned["new_tok"]
    assert "ü" not in "".join(pruned["corpus"])
    ids = new_tok.encode(UNSEEN, add_special_tokens=False)
    assert ids and all(0 <= i < len(pruned["kept"]) for i in ids)
    assert new_tok.decode(ids) == UNSEEN
    assert len(ids) > len(pruned["tok"].encode(UNSEEN, add_special_tokens=False))  # smaller pieces, same text


def test_kept_ids_are_closed_under_the_bpe_merges(pruned):
    from tokenizers.pre_tokenizers import ByteLevel

    data = json.loads(pruned["tok"].backend_tokenizer.to_str())
    vocab, kept = data["model"]["vocab"], set(pruned["kept"])
    assert {t["id"] for t in data["added_tokens"]} <= kept
    assert {vocab[c] for c in ByteLevel.alphabet() if c in vocab} <= kept
    for a, b in data["model"]["merges"]:
        if vocab[a + b] in kept:
            assert vocab[a] in kept and vocab[b] in kept, (a, b)
    assert pruned["kept"] == kept_token_ids(pruned["tok"], pruned["corpus"])
    a, b = next((a, b) for a, b in data["model"]["merges"] if vocab[a + b] in kept and len(a) > 1)
    not_closed = sorted(kept - {vocab[a]})  # keeps a token but not one of the parts its merge needs
    with pytest.raises(ValueError, match="not closed"):
        prune_tokenizer_json(data, not_closed)


def test_pruned_folder_is_small_and_loads_with_the_auto_classes(pruned):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, kept = pruned["out"], pruned["kept"]
    k, hidden = len(kept), pruned["model"].config.hidden_size
    print(f"\nK = {k} of 49152 tokens for {len(pruned['corpus'])} corpus texts")
    assert 256 < k < 49152 // 20
    assert count_parameters(pruned["new_model"]) == count_parameters(pruned["model"]) - (49152 - k) * hidden
    record = json.loads((out / "vocab_map.json").read_text())
    assert (
        record["vocab_size"] == k and record["original_vocab_size"] == 49152 and record["source"] == str(pruned["base"])
    )
    assert (out / "student_meta.json").read_text() == (pruned["base"] / "student_meta.json").read_text()
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]

    tok, new_tok = AutoTokenizer.from_pretrained(out), pruned["tok"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(tok) == model.config.vocab_size == model.get_input_embeddings().weight.shape[0] == k
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    for name in ("bos", "eos", "pad", "unk"):
        old_id, new_id = getattr(pruned["model"].config, f"{name}_token_id"), getattr(model.config, f"{name}_token_id")
        assert kept[new_id] == old_id and tok.convert_ids_to_tokens(new_id) == new_tok.convert_ids_to_tokens(old_id)
    assert tok.eos_token == new_tok.eos_token and tok.eos_token_id == model.generation_config.eos_token_id
    assert tok.convert_ids_to_tokens(model.generation_config.pad_token_id) == new_tok.pad_token


def test_pruned_model_gives_the_original_logits_at_the_kept_ids(pruned):
    kept, tok = pruned["kept"], pruned["tok"]
    new_id = {old: new for new, old in enumerate(kept)}
    columns = torch.tensor(kept)
    for text in pruned["corpus"][:8]:
        ids = tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            original = pruned["model"](torch.tensor([ids])).logits[0]
            new = pruned["new_model"](torch.tensor([[new_id[i] for i in ids]])).logits[0]
        assert new.shape == (len(ids), len(kept))
        torch.testing.assert_close(new, original[:, columns], rtol=1e-5, atol=1e-5)


class KeepOnly(LogitsProcessor):
    """Greedy decoding restricted to some token ids (faster than ``suppress_tokens`` of 48k ids)."""

    def __init__(self, ids: list[int], vocab_size: int):
        self.dropped = torch.ones(vocab_size, dtype=torch.bool)
        self.dropped[ids] = False

    def __call__(self, input_ids, scores):
        return scores.masked_fill(self.dropped, float("-inf"))


def test_greedy_generation_agrees_with_the_original_restricted_to_kept_tokens(pruned):
    # an untrained 2-layer cut babbles in tokens outside any task's text, so the claim is that the
    # pruned model is the original with its output restricted to the kept vocabulary
    kept, tok, new_tok = pruned["kept"], pruned["tok"], pruned["new_tok"]
    keep_only = LogitsProcessorList([KeepOnly(kept, pruned["model"].config.vocab_size)])
    for text in pruned["corpus"][:6:2]:
        ids = tok.encode(text, add_special_tokens=False)
        new_ids = new_tok.encode(text, add_special_tokens=False)
        with torch.no_grad():
            original = pruned["model"].generate(
                torch.tensor([ids]), max_new_tokens=8, do_sample=False, logits_processor=keep_only
            )[0, len(ids) :]
            new = pruned["new_model"].generate(torch.tensor([new_ids]), max_new_tokens=8, do_sample=False)[
                0, len(new_ids) :
            ]
        assert len(new) == 8 and [kept[i] for i in new.tolist()] == original.tolist()
        assert new_tok.decode(new) == tok.decode(original)


def test_pruning_again_replaces_the_folder_whole(pruned):
    out = prune_vocabulary(pruned["base"], pruned["corpus"][:2], pruned["out"].with_name("twice"))
    first = json.loads((out / "vocab_map.json").read_text())["vocab_size"]
    prune_vocabulary(pruned["base"], pruned["corpus"], out)
    assert json.loads((out / "vocab_map.json").read_text())["vocab_size"] == len(pruned["kept"]) > first
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]


def _unigram_tokenizer(corpus: list[str]):
    """A SentencePiece-style Unigram tokenizer as T5's (Metaspace, <pad> </s> <unk>, </s> appended),
    trained on ``corpus`` with the ``tokenizers`` library (T5's own cannot be downloaded here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"],
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _t5_with(tokenizer, out, tied: bool):
    """A small random T5 reading ``tokenizer``, saved to ``out`` (untied: the head its own matrix, as v1.1)."""
    from transformers import T5Config, T5ForConditionalGeneration

    from utils.models import save_checkpoint

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=tied)
    model = T5ForConditionalGeneration(config)
    if not tied:  # transformers 5 ties T5's head whatever the config says: give it its own matrix
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.get_input_embeddings().weight))
    return save_checkpoint(model, tokenizer, out)


def _assert_same_seq2seq_logits(base, out, texts):
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    new_id = {old: new for new, old in enumerate(kept)}
    tok, new_tok = load_tokenizer(base), load_tokenizer(out)
    model, new_model = load_model(base, "seq2seq").eval(), load_model(out, "seq2seq").eval()
    assert new_model.get_output_embeddings().weight.shape[0] == len(kept) < len(tok)
    for text in texts:
        ids = tok.encode(text)
        assert new_tok.encode(text) == [new_id[i] for i in ids]  # the same tokens, renumbered
        decoder = ids[:5]
        with torch.no_grad():
            original = model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder])).logits[0]
            new = new_model(input_ids=torch.tensor([[new_id[i] for i in ids]]),
                            decoder_input_ids=torch.tensor([[new_id[i] for i in decoder]])).logits[0]
        torch.testing.assert_close(new, original[:, torch.tensor(kept)], rtol=1e-5, atol=1e-5)
    return kept


@pytest.mark.parametrize("tied", [True, False])
def test_a_t5_student_with_a_unigram_tokenizer_is_pruned_exactly(tied, tmp_path):
    """T5's tokenizer model (SentencePiece Unigram): the corpus tokenizes to the same pieces, the
    pruned T5 gives the original logits at the kept ids (tied and untied heads), unseen text still
    encodes, and the special ids the config names stay where they were."""
    corpus = _corpus()
    wide = corpus + [f"Lorem ipsum dolor sit amet, quartz {w} vexes jumpy fog." for w in ("zebra", "kiwi", "yak")]
    tokenizer = _unigram_tokenizer(wide)
    base = _t5_with(tokenizer, tmp_path / "t5", tied)
    out = prune_vocabulary(base, corpus[:60], tmp_path / "t5-pruned")
    kept = _assert_same_seq2seq_logits(base, out, corpus[:60:7])
    assert kept[:3] == [0, 1, 2]  # <pad> </s> <unk>: pad = decoder start and eos keep their ids
    pieces = [p for p, _ in json.loads(load_tokenizer(base).backend_tokenizer.to_str())["model"]["vocab"]]
    assert all(pieces[i] for i in kept) and any(len(pieces[i]) > 1 for i in range(len(pieces)) if i not in kept)
    new_tok = load_tokenizer(out)
    assert new_tok.decode(new_tok.encode("quartz zebra"), skip_special_tokens=True) == "quartz zebra"  # from characters


def test_a_word_level_t5_student_is_pruned_exactly(tmp_path):
    """The project's tiny T5 (``make_t5_student``, a WordLevel tokenizer): the corpus's words keep
    their tokens and logits; another word becomes <unk>, as an unseen word does in the original."""
    from utils.models import make_t5_student

    corpus = _corpus()
    t5 = make_t5_student(corpus + ["zebra kiwi yak"], tmp_path / "t5", d_model=32, n_layers=1, n_heads=2, d_ff=64)
    out = prune_vocabulary(t5, corpus[:20], tmp_path / "t5-pruned")
    _assert_same_seq2seq_logits(t5, out, corpus[:20:5])
    new_tok = load_tokenizer(out)
    assert new_tok.convert_ids_to_tokens(new_tok.encode("zebra", add_special_tokens=False)) == ["<unk>"]


def test_a_pruning_that_would_change_a_segmentation_is_refused(tmp_path):
    """check_same_tokens re-encodes every text: a piece a text needs, dropped, is caught."""
    from utils.vocab import check_same_tokens

    corpus = _corpus()[:30]
    tokenizer = _unigram_tokenizer(corpus)
    kept = kept_token_ids(tokenizer, corpus)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    used = max(tokenizer.encode(corpus[0], add_special_tokens=False), key=lambda i: len(data["model"]["vocab"][i][0]))
    short = [i for i in kept if i != used]
    with pytest.raises(ValueError, match="splits .* differently"):
        check_same_tokens(tokenizer, prune_tokenizer_json(data, short), corpus, short)
    check_same_tokens(tokenizer, prune_tokenizer_json(data, kept), corpus, kept)  # the real kept set passes


def test_a_bpe_tokenizer_that_is_not_byte_level_is_refused_clearly():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = _corpus()[:20]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()  # no byte symbols: unseen characters become <unk>
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    with pytest.raises(ValueError, match="supports byte-level BPE.*without a ByteLevel"):
        kept_token_ids(PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>"), corpus)


def test_a_model_whose_embedding_does_not_fit_its_tokenizer_is_refused(tmp_path, pruned):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=300,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "small")
    pruned["tok"].save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="embedding has 300 rows"):
        prune_vocabulary(tmp_path / "small", pruned["corpus"][:4], tmp_path / "out")
    assert not (tmp_path / "out").exists()
