"""The committed teacher cache (data/teacher_cache): it must match today's prompts and model."""

import json

import pytest

from utils.config import REPO_ROOT, load_config
from utils.prompts import build_prompt
from utils.tasks import select_examples
from utils.teacher import GenerationCache, LlamaCppTeacher, Teacher

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


@pytest.mark.slow
def test_cached_greedy_output_is_what_the_bundled_model_writes():
    """Regenerate two cached greedy answers with the real model: the cache is genuine output."""
    cache = GenerationCache(CACHE.with_suffix(".unused"), [CACHE])
    teacher = LlamaCppTeacher(CONFIG.teacher_model)
    for example in select_examples(CONFIG.task, "test", 2, CONFIG.max_ops):
        greedy_key, _, prompt = _keys(example)
        fresh = teacher.generate([prompt], n=1, temperature=0.0, max_new_tokens=CONFIG.max_new_tokens, seed=CONFIG.seed)
        assert fresh[0] == cache.get(greedy_key)
