"""The committed teacher cache (data/teacher_cache): it must match today's prompts and model.

Its texts were written on one CPU; a greedy decode on another can differ at near-ties (see
tests/greedy_check.py), so the model check scores the cached text instead of regenerating it.
"""

import json
import re

import pytest

from tests.greedy_check import TOLERANCE, greedy_gaps
from utils.config import REPO_ROOT, load_config
from utils.loaders import select_examples
from utils.prompts import build_prompt
from utils.teacher import GenerationCache, Teacher

CONFIG = load_config("tiny")
CACHE = REPO_ROOT / CONFIG.teacher_cache_seed


class _Named(Teacher):
    backend = "llamacpp"  # same identity as the real backend, for computing keys only


def _keys(example, config=CONFIG):
    teacher = _Named(config.teacher_model)
    prompt = build_prompt(example, config.task, n_shots=config.n_shots)
    greedy = {"temperature": 0.0, "max_new_tokens": config.max_new_tokens, "seed": config.seed, "n": 1}
    sampled = {"temperature": config.temperature, "max_new_tokens": config.max_new_tokens, "seed": config.seed,
               "n": config.n_samples - 1}
    return GenerationCache.key(teacher, prompt, greedy), GenerationCache.key(teacher, prompt, sampled), prompt


def test_cache_covers_the_tiny_profile():
    """If the exemplars, prompt format or tiny sampling settings change, regenerate the cache
    with the command in notebook 01; this test says so instead of letting the demo slow down."""
    cache = GenerationCache(CACHE.with_suffix(".unused"), [CACHE])
    train = select_examples(CONFIG.task, "train", CONFIG.n_train, CONFIG.max_ops)
    test = select_examples(CONFIG.task, "test", CONFIG.n_test, CONFIG.max_ops)
    missing = [ex["id"] for ex in train if any(cache.get(k) is None for k in _keys(ex)[:2])]
    missing += [ex["id"] for ex in test if cache.get(_keys(ex)[0]) is None]
    assert not missing, f"{len(missing)} tiny prompts are not in {CACHE.name}: regenerate it (notebook 01, section 4)"


def test_cache_lines_are_well_formed():
    for line in CACHE.read_text().splitlines():
        entry = json.loads(line)
        assert len(entry["key"]) == 64 and all(isinstance(o, str) for o in entry["outputs"])
        assert "sk-" not in line  # no key or secret ever lands in a cache


def _greedy_entries(n: int = 3):
    cache = GenerationCache(CACHE.with_suffix(".unused"), [CACHE])
    for example in select_examples(CONFIG.task, "test", n, CONFIG.max_ops):
        greedy_key, _, prompt = _keys(example)
        yield prompt, cache.get(greedy_key)[0]


@pytest.mark.slow
def test_cached_greedy_output_is_what_the_bundled_model_writes():
    """The cache is genuine greedy output of the bundled model: every token of three cached answers
    is the model's top choice, within rounding. Not text equality: llama.cpp's kernels differ from
    CPU to CPU, so a greedy decode here may part from the committed one at a near-tie."""
    for prompt, text in _greedy_entries():
        gaps = greedy_gaps(prompt, text)
        assert gaps and max(gaps) <= TOLERANCE, (text, [round(g, 2) for g in gaps])


@pytest.mark.slow
def test_the_greedy_check_rejects_an_answer_the_model_did_not_write():
    """The check above fails when the cache is wrong: a number changed, or another prompt's answer."""
    (prompt, text), (_, other) = list(_greedy_entries(2))
    last = list(re.finditer(r"\d+", text))[-1]
    tampered = text[: last.start()] + str(int(last.group()) + 1) + text[last.end() :]
    assert max(greedy_gaps(prompt, tampered)) > TOLERANCE
    assert max(greedy_gaps(prompt, other)) > TOLERANCE
