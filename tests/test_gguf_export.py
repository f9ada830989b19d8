"""GGUF for llama.cpp and Ollama: the rotary permutation, the Modelfile, and a round trip of a real
exported student (tests/exported_student.py) through transformers and llama.cpp."""

import json

import numpy as np
import pytest

from tests.exported_student import exported_run
from utils.gguf_export import (
    compare_gguf,
    export_gguf,
    modelfile_text,
    permute_for_gguf,
    render_modelfile_prompt,
    write_modelfile,
)
from utils.prompting import LABEL_PREFIX, format_prompt


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return exported_run(tmp_path_factory)


def test_gguf_permutation_puts_each_rotary_pair_on_adjacent_rows():
    # one head of dimension 4: HF pairs row j with row j + 2; llama.cpp wants them at 2j and 2j + 1
    weight = np.arange(4)[:, None] * np.ones((1, 3))
    assert permute_for_gguf(weight, 1)[:, 0].tolist() == [0, 2, 1, 3]
    two_heads = np.arange(8)[:, None] * np.ones((1, 2))
    assert permute_for_gguf(two_heads, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_modelfile_renders_the_training_prompt_and_refuses_what_it_cannot_serve():
    from utils.models import load_tokenizer

    meta = {"family": "causal", "label_prefix": "[label] ", "rationale_prefix": "[rationale] ", "chat_template": False}
    text = modelfile_text(meta)
    assert "FROM ./student.gguf" in text and "PARAMETER temperature 0" in text and 'PARAMETER stop "\n"' in text
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    problem = "Kofi has 19 marbles. How many?"
    assert render_modelfile_prompt(text, problem) == format_prompt(tokenizer, "[label] " + problem, "causal")
    rationale = modelfile_text(meta, rationale=True)
    assert render_modelfile_prompt(rationale, problem) == "[rationale] " + problem + "\n"
    assert "PARAMETER stop" not in rationale  # a rationale may span lines
    with pytest.raises(ValueError, match="plain prompt format"):
        modelfile_text({**meta, "chat_template": True})


def test_gguf_refuses_seq2seq_students_clearly(tmp_path):
    (tmp_path / "student_meta.json").write_text(json.dumps({"family": "seq2seq", "mode": "dss", "task": "arith"}))
    with pytest.raises(ValueError, match="causal students"):
        export_gguf(tmp_path)


@pytest.mark.slow
def test_gguf_export_leaves_no_partial_file_when_it_fails(run, monkeypatch):
    import utils.gguf_export

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    gguf_dir = run["out"] / "gguf-failed"
    monkeypatch.setattr(utils.gguf_export, "_add_gguf_tensors", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(run["out"], gguf_dir)
    assert list(gguf_dir.iterdir()) == []


@pytest.mark.slow
def test_gguf_round_trip_through_transformers_and_llama_cpp(run):

    path = export_gguf(run["out"])
    assert path.parent.name == "gguf" and path.stat().st_size > 1e6
    modelfile, _ = write_modelfile(run["out"], path)
    assert modelfile.parent == path.parent and "FROM ./student.gguf" in modelfile.read_text()
    result = compare_gguf(run["out"], path, list(run["test"]["input"][:3]))
    assert result["tokens_match"], "llama.cpp tokenizes the prompts differently from the student's tokenizer"
    assert result["agreement_transformers_gguf"] == 1.0, result
    assert result["same_next_token"] and result["logits_max_abs_diff"] < 0.1, result
    assert result["agreement_llama_cpp"] >= 2 / 3, result

    from utils.llamacpp import open_gguf

    half = export_gguf(run["out"], run["out"] / "gguf-f16", dtype="f16")
    assert 0.4 < half.stat().st_size / path.stat().st_size < 0.6
    llm = open_gguf(half, n_ctx=128, n_threads=1, n_threads_batch=1, verbose=False)
    prompt = format_prompt(None, LABEL_PREFIX + run["test"]["input"][0], "causal")
    assert llm.create_completion(prompt, max_tokens=4, temperature=0.0)["usage"]["completion_tokens"] >= 1
    llm.close()
