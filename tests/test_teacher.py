"""The teacher: the bundled model through llama.cpp, the cache, and resuming after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from utils.loaders import select_examples
from utils.teacher import GenerationCache, Teacher, generate_rationales, load_teacher, summarize_records

REPO = Path(__file__).resolve().parent.parent


class CountingTeacher(Teacher):
    """A deterministic stand-in used only to test the cache's bookkeeping (not model behaviour)."""

    backend = "counting"

    def __init__(self):
        super().__init__("counter")
        self.calls = 0

    def _generate_one(self, prompt, n, temperature, max_new_tokens, seed):
        self.calls += 1
        return ["It is 2 + 3 = 5. The answer is ( 2 + 3 )." for _ in range(n)]


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match="Valid backends: llamacpp, transformers, ollama, openai, vllm"):
        load_teacher("gpt", "x")


def test_vllm_backend_is_optional_and_says_how_to_get_it():
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    from utils.teacher import TeacherError

    with pytest.raises(TeacherError, match="pip install vllm"):
        load_teacher("vllm", "smollm2-135m-instruct")


def test_cache_skips_what_is_cached(tmp_path):
    examples = select_examples("arith", "train", 3)
    teacher = CountingTeacher()
    first = generate_rationales(teacher, "arith", examples, tmp_path / "c.jsonl", n=3)
    calls = teacher.calls
    second = generate_rationales(teacher, "arith", examples, tmp_path / "c.jsonl", n=3)
    assert teacher.calls == calls  # nothing generated twice
    assert [r["samples"] for r in first] == [r["samples"] for r in second]
    assert all(len(r["samples"]) == 3 for r in second)


def test_torn_last_line_is_dropped_and_redone(tmp_path):
    path = tmp_path / "c.jsonl"
    examples = select_examples("arith", "train", 2)
    teacher = CountingTeacher()
    generate_rationales(teacher, "arith", examples, path, n=1)
    with open(path, "a") as handle:
        handle.write('{"key": "abc", "outp')  # a process killed mid-write
    cache = GenerationCache(path)
    assert cache.torn == 1 and len(cache.entries) == 2
    assert path.read_text().endswith("\n")


def test_secrets_never_reach_the_cache_key(monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    teacher = load_teacher("openai", "m", base_url="http://127.0.0.1:9/v1")
    assert "sk-secret" not in json.dumps(teacher.describe())


@pytest.mark.slow
def test_bundled_teacher_through_llamacpp(tmp_path):
    teacher = load_teacher("llamacpp", "smollm2-135m-instruct")
    examples = select_examples("arith", "train", 2, max_ops=1)
    records = generate_rationales(teacher, "arith", examples, tmp_path / "c.jsonl", n=2, max_new_tokens=40, n_shots=4)
    assert len(records) == 2
    for record in records:
        assert len(record["samples"]) == 2
        assert all(s["text"].strip() for s in record["samples"])  # the real model wrote text
    summary = summarize_records(records)
    assert summary["samples"] == 4 and 0.0 <= summary["accuracy_vote"] <= 1.0


@pytest.mark.slow
def test_killed_run_resumes_without_losing_outputs(tmp_path):
    """Kill a real teacher run mid-way; the rerun keeps what was written and finishes the rest."""
    cache = tmp_path / "cache.jsonl"
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from utils.loaders import select_examples\n"
        "from utils.teacher import generate_rationales, load_teacher\n"
        "t = load_teacher('llamacpp', 'smollm2-135m-instruct')\n"
        "ex = select_examples('arith', 'train', 12, max_ops=1)\n"
        f"generate_rationales(t, 'arith', ex, {str(cache)!r}, n=1, max_new_tokens=40, n_shots=4, batch_size=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        if cache.exists() and len(cache.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = [json.loads(line) for line in cache.read_text().splitlines() if line.endswith("}")]
    assert 3 <= len(kept) < 12, "the run should have been killed part-way"
    teacher = load_teacher("llamacpp", "smollm2-135m-instruct")
    examples = select_examples("arith", "train", 12, max_ops=1)
    records = generate_rationales(teacher, "arith", examples, cache, n=1, max_new_tokens=40, n_shots=4)
    assert len(records) == 12
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len({line["key"] for line in lines}) == 12  # each prompt generated once, none lost
    for old in kept:  # what was written before the kill is reused as it was
        assert any(line["key"] == old["key"] and line["outputs"] == old["outputs"] for line in lines)


@pytest.mark.slow
def test_bundled_teacher_through_transformers_batched_and_chat():
    from utils.prompts import build_prompt
    from utils.teacher import TransformersTeacher

    teacher = TransformersTeacher("smollm2-135m-instruct", batch_size=2)
    assert teacher.tokenizer.padding_side == "left"
    examples = select_examples("arith", "test", 3, max_ops=1)
    prompts = [build_prompt(ex, "arith", n_shots=2) for ex in examples]
    outputs = teacher.generate(prompts, n=1, max_new_tokens=12)
    assert len(outputs) == 3 and all(len(o) == 1 and o[0].strip() for o in outputs)
    sampled = teacher.generate(prompts[:1], n=2, temperature=0.8, max_new_tokens=8, seed=1)
    assert len(sampled[0]) == 2
    chat = teacher.generate([build_prompt(examples[0], "arith", n_shots=2, chat=True)], max_new_tokens=12)
    assert chat[0][0].strip()  # the model's chat template was applied and it answered


@pytest.mark.slow
def test_transformers_teacher_samples_a_prompt_the_same_wherever_it_stands_in_the_list():
    """A resumed run asks for fewer prompts, so each prompt's position changes: its samples must not
    (they are seeded by the prompt's text and the run's seed), and the caller's RNG is left alone."""
    import torch

    from utils.prompts import build_prompt
    from utils.teacher import TransformersTeacher

    teacher = TransformersTeacher("smollm2-135m-instruct", batch_size=2)
    examples = select_examples("arith", "test", 2, max_ops=1)
    first, second = (build_prompt(ex, "arith", n_shots=1) for ex in examples)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    both = teacher.generate([first, second], n=2, temperature=1.0, max_new_tokens=8, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    alone = teacher.generate([second], n=2, temperature=1.0, max_new_tokens=8, seed=3)
    assert alone[0] == both[1]
    assert teacher.generate([second], n=2, temperature=1.0, max_new_tokens=8, seed=4)[0] != alone[0]


@pytest.mark.slow
def test_open_gguf_keeps_plain_buffers_only_while_it_loads_and_the_model_answers():
    """AMX kernels of llama-cpp-python 0.3.36 crash the bundled model; open_gguf loads it without them."""
    import llama_cpp.llama_cpp as lib

    from utils.llamacpp import extra_buffers_off, open_gguf
    from utils.models import bundled_gguf_path

    with extra_buffers_off():
        assert lib.llama_model_default_params().use_extra_bufts is False
    assert lib.llama_model_default_params().use_extra_bufts is True  # nothing leaks past the load
    llm = open_gguf(bundled_gguf_path(), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
    try:
        out = llm.create_completion("Q: What is 2 plus 3?\nA:", max_tokens=8, temperature=0.0)
        assert out["usage"]["completion_tokens"] >= 1 and out["choices"][0]["text"].strip()
    finally:
        llm.close()
    with pytest.raises(FileNotFoundError, match="not found"):
        open_gguf(bundled_gguf_path().parent / "missing.gguf")
