"""benchmarks/trainer_throughput.py: the t5-small-shaped seq2seq student and its FLOP accounting."""

import pytest

from tests.benchmark_scripts import load_benchmark
from utils.models import count_parameters, load_model, load_tokenizer

pytestmark = pytest.mark.slow  # builds and saves a real 77M-parameter T5 (about 10 s on a 2-core CPU)
CORPUS = ["[label] [rationale]", "Tom has 3 apples and buys 4 more . 3 + 4 = 7", "How many apples ?"]
FLAN_T5_SMALL_PARAMETERS = 76_961_152  # google/flan-t5-small's count (shared embedding + separate head)


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("trainer_throughput")


@pytest.fixture(scope="module")
def inits(benchmark, tmp_path_factory):
    """The tiny T5 and the t5-small-shaped one built from it, as the benchmark builds them."""
    work = tmp_path_factory.mktemp("seq2seq-shapes")
    return {shape: benchmark.seq2seq_init(CORPUS, work, shape) for shape in ("tiny", "t5-small")}


def test_t5_small_shape_has_flan_t5_smalls_architecture(benchmark, inits):
    model = load_model(inits["t5-small"], "seq2seq")
    config = model.config
    assert (config.d_model, config.d_kv, config.d_ff, config.num_heads) == (512, 64, 1024, 6)
    assert (config.num_layers, config.num_decoder_layers) == (8, 8)
    assert config.is_gated_act and config.feed_forward_proj == "gated-gelu"
    assert model.get_output_embeddings().weight.shape == (32128, 512)
    assert count_parameters(model) == FLAN_T5_SMALL_PARAMETERS


def test_t5_small_shape_head_is_untied(inits):
    model = load_model(inits["t5-small"], "seq2seq")
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert head.data_ptr() != embedding.data_ptr()
    assert not head.eq(embedding).all()
    # the encoder and decoder embeddings stay the shared input embedding, as in T5
    assert model.get_encoder().embed_tokens.weight.data_ptr() == embedding.data_ptr()


def test_t5_small_shape_reads_the_tiny_tokenizer(inits):
    tiny, shaped = load_tokenizer(inits["tiny"]), load_tokenizer(inits["t5-small"])
    assert tiny.get_vocab() == shaped.get_vocab() and len(shaped) < 32128
    ids = shaped("Tom has 3 apples").input_ids
    assert ids == tiny("Tom has 3 apples").input_ids and max(ids) < len(shaped)


@pytest.mark.parametrize("shape", ["tiny", "t5-small"])
def test_flop_parameters_count_the_head_once_and_no_input_embedding(benchmark, inits, shape):
    model = load_model(inits[shape], "seq2seq")
    params = benchmark.flop_parameters(model, "seq2seq")
    head = model.get_output_embeddings().weight.numel()
    embeddings = {"shared.weight", "lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    body = sum(p.numel() for name, p in model.named_parameters(remove_duplicate=False) if name not in embeddings)
    assert params["head"] == head == model.config.vocab_size * model.config.d_model
    assert params["n"] == body == params["n_enc"] + params["n_dec"]
    tied = shape == "tiny"
    assert params["n"] + head * (1 if tied else 2) == count_parameters(model)
    flops = benchmark.useful_flops(params, "seq2seq", enc_tokens=10, dec_tokens=4, targets=3)
    assert flops == 6 * (params["n_enc"] * 10 + params["n_dec"] * 4 + head * 3)


def test_unknown_seq2seq_shape_names_the_choices(benchmark, tmp_path):
    with pytest.raises(ValueError, match="Valid shapes: tiny, t5-small"):
        benchmark.seq2seq_init(CORPUS, tmp_path, "t5-base")
