"""Is a text what the bundled model writes greedily? A check that holds on every CPU.

llama.cpp is compiled for the machine it is installed on, so its kernels, and the rounding of a
4-bit model's logits, differ between an AVX2 and an AVX-512 CPU; even on one machine a reused
prompt cache or another batch shape changes the arithmetic. Where two tokens are almost tied, one
rounding picks the first and another the second, and from there the two greedy texts part ways.
Comparing texts for equality therefore tests the CPU, not the model.

What does hold everywhere: a greedy text is, token by token, the model's top choice given
everything before it, up to rounding. ``greedy_gaps`` scores a text under the model in one pass
and returns, for every token, how many nats its log-probability lies below the best token's
. A genuine greedy text has every gap near 0; a text that is not the model's (a wrong cache
line, a corrupted stream piece) has tokens that lie nats below the top choice.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Rounding differences move a Q4_1 model's log-probabilities enough to flip near-ties: over the
# 100 committed greedy test answers, scored on an AVX-512 CPU, the largest gap of a genuine token
# was 0.51 nats (median 0); replacing one number of an answer gave gaps of 3.8 to 8.5 nats, and
# another prompt's answer 8.6 to 9.6 (see test_teacher_cache_data.py).
TOLERANCE = 1.5


@lru_cache(maxsize=1)
def scorer():
    """The bundled GGUF, loaded once, with logits kept for every position."""
    from utils.llamacpp import open_gguf
    from utils.models import bundled_gguf_path

    return open_gguf(bundled_gguf_path(), n_ctx=2048, n_threads=1, n_threads_batch=1,
                     logits_all=True, verbose=False)


def greedy_gaps(prompt: str, text: str) -> list[float]:
    """For each token of ``text`` after ``prompt``: max log-prob minus the token's log-prob (nats).

    The prompt is tokenised as ``create_completion`` tokenises it; the text is tokenised on its
    own, which gives the tokens the model emitted for the texts it writes here (plain words and
    digits). The greedy pick is on the raw logits: the teacher and these tests call llama.cpp with
    its default ``repeat_penalty=1.0``.
    """
    llm = scorer()
    prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    text_ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    if not text_ids:
        return []
    llm.reset()  # a fresh context: no prompt cache from the previous call
    llm.eval(prompt_ids + text_ids)
    scores = np.asarray(llm.scores[: len(prompt_ids) + len(text_ids)])
    gaps = []
    for i, token in enumerate(text_ids):
        logits = scores[len(prompt_ids) + i - 1].astype(np.float64)
        logprobs = logits - np.logaddexp.reduce(logits)
        gaps.append(float(logprobs.max() - logprobs[token]))
    return gaps


def is_greedy_text(prompt: str, text: str, tolerance: float = TOLERANCE) -> bool:
    """Whether every token of ``text`` is within ``tolerance`` nats of the model's greedy choice."""
    return max(greedy_gaps(prompt, text), default=0.0) <= tolerance
