"""The teacher: one interface over four backends, and a crash-safe cache of everything it says.

``generate(prompts, n=1, **sampling) -> list[list[str]]``: for each prompt, ``n`` completions.
A prompt is a string (completion form) or a list of chat messages.

- ``llamacpp``: a GGUF file in-process through llama-cpp-python (the engine inside Ollama);
  the fastest way to run the bundled model on a CPU.
- ``transformers``: any causal LM in-process, batched with left padding.
- ``ollama``: the official ``ollama`` client against a running Ollama server.
- ``openai``: the official ``openai`` client against any OpenAI-compatible server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from utils.prompts import build_prompt
from utils.rationales import label_key, majority_vote, parse_cot_detailed
from utils.tasks import Task, resolve_task, task_correct

STOP = ["\nQ:", "\n\n\n"]  # the model starts inventing the next few-shot block


class TeacherError(RuntimeError):
    """A teacher backend failed in a way the user can fix; the message says how."""


class Teacher:
    """Base class: subclasses implement ``_generate_one``; batching lives here."""

    backend = "base"

    def __init__(self, model: str):
        self.model = model

    def generate(self, prompts: list, n: int = 1, temperature: float = 0.0,
                 max_new_tokens: int = 64, seed: int = 0) -> list[list[str]]:
        """``n`` completions for each prompt (greedy when temperature is 0)."""
        return [self._generate_one(p, n, temperature, max_new_tokens, seed) for p in prompts]

    def _generate_one(self, prompt, n, temperature, max_new_tokens, seed) -> list[str]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What identifies this teacher in the cache key."""
        return {"backend": self.backend, "model": self.model}


class LlamaCppTeacher(Teacher):
    """A GGUF model in-process through llama-cpp-python."""

    backend = "llamacpp"

    def __init__(self, model: str = "smollm2-135m-instruct", n_ctx: int = 2048, n_threads: int | None = None):
        super().__init__(model)
        from utils.llamacpp import open_gguf
        from utils.models import BUNDLED_MODELS, bundled_gguf_path

        path = bundled_gguf_path(model) if model in BUNDLED_MODELS else Path(model)
        if not Path(path).exists():
            raise TeacherError(f"GGUF file {path} not found. Give a bundled name ({', '.join(BUNDLED_MODELS)}) "
                               "or the path of a .gguf file.")
        self.llm = open_gguf(path, n_ctx=n_ctx, n_threads=n_threads or os.cpu_count(), seed=0, verbose=False)

    def _generate_one(self, prompt, n, temperature, max_new_tokens, seed):
        outs = []
        for i in range(n):
            kwargs = dict(max_tokens=max_new_tokens, temperature=temperature, seed=seed + i, stop=STOP)
            if isinstance(prompt, str):
                result = self.llm.create_completion(prompt, **kwargs)
                outs.append(result["choices"][0]["text"])
            else:
                result = self.llm.create_chat_completion(messages=prompt, **kwargs)
                outs.append(result["choices"][0]["message"]["content"] or "")
        return outs


def prompt_seed(seed: int, prompt: str) -> int:
    """A sampling seed for one prompt, from its text and the run's seed (not its position in a list)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\n{prompt}".encode()).digest()[:4], "big")


class TransformersTeacher(Teacher):
    """Any causal LM in-process, batched with left padding; bf16 autocast where it is fast."""

    backend = "transformers"

    def __init__(self, model: str, batch_size: int = 8, device: str | None = None):
        super().__init__(model)
        from utils.config import pick_device, use_bf16
        from utils.models import load_model, load_tokenizer

        self.device = device or pick_device(verbose=False)
        self.tokenizer = load_tokenizer(model, padding_side="left")
        self.lm = load_model(model, "causal").to(self.device).eval()
        self.bf16 = use_bf16(self.device)
        self.batch_size = batch_size

    def _render(self, prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in prompt if m["role"] != "system")

    def generate(self, prompts, n=1, temperature=0.0, max_new_tokens=64, seed=0):
        """Greedy prompts go in batches; sampled prompts one at a time, each seeded by ``prompt_seed``
        (its text and ``seed``), so a prompt's samples do not depend on which other prompts share its
        batch or where a resumed run's to-do list puts it. The caller's RNG state is left untouched."""
        texts = [self._render(p) for p in prompts]
        sample = temperature > 0
        step = 1 if sample else self.batch_size
        results = []
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            decoded = self._decode(chunk, n, temperature if sample else None, max_new_tokens,
                                   prompt_seed(seed, chunk[0]) if sample else None)
            for i in range(len(chunk)):
                results.append([_cut_stop(t) for t in decoded[i * n : (i + 1) * n]])
        return results

    def _decode(self, chunk: list[str], n: int, temperature: float | None, max_new_tokens: int,
                seed: int | None) -> list[str]:
        import torch

        enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        devices = [torch.cuda.current_device()] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), \
                torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.lm.generate(**enc, max_new_tokens=max_new_tokens, do_sample=temperature is not None,
                                   temperature=temperature, top_p=None, top_k=None, num_return_sequences=n,
                                   pad_token_id=self.tokenizer.pad_token_id, stop_strings=STOP,
                                   tokenizer=self.tokenizer)
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


# Transient answers worth another try: rate limits and a server or proxy that is briefly unwell.
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_log = logging.getLogger(__name__)


def _call_with_retries(call, *, retries: int, backoff: float, transient, explain, where: str):
    """``call()``, tried again after a transient failure, waiting ``backoff * 2**k`` seconds (k = 0, 1, ...).

    At most ``retries`` more tries. The last failure becomes one ``TeacherError`` whose text comes from
    ``explain(exc, tries)``; failures it does not know (``None``) propagate unchanged.
    """
    tries = 0
    while True:
        tries += 1
        try:
            return call()
        except Exception as exc:
            if tries <= retries and transient(exc):
                # Jitter keeps concurrent workers from retrying in lock-step against a recovering server.
                delay = backoff * 2 ** (tries - 1) * (1 + 0.25 * random.random())
                # The log names the failure's type and status only: bodies may echo credentials.
                _log.warning("%s: %s (try %d of %d); retrying in %.2f s", where, _failure_name(exc), tries,
                             retries + 1, delay)
                time.sleep(delay)
                continue
            message = explain(exc, tries)
            if message is None:
                raise
            if isinstance(getattr(exc, "status_code", None), int):
                # An HTTP answer: the library's exception quotes the server's body, which may echo the
                # credential back. The message already has the status and a cleaned excerpt of the body.
                raise TeacherError(message) from None
            raise TeacherError(message) from exc


def _failure_name(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if isinstance(status, int) and status > 0 else type(exc).__name__


def _excerpt(text, secret: str | None = None, limit: int = 300) -> str:
    """The start of a server's answer on one line, with the API key (if any) blanked out."""
    text = " ".join(str(text or "").split())
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text if len(text) <= limit else text[:limit] + "..."


def _tries(tries: int) -> str:
    return f" after {tries} tries" if tries > 1 else ""


def _ollama_url(host: str | None) -> str:
    """``OLLAMA_HOST`` as a URL: ``127.0.0.1:11434``, ``localhost`` and ``http://...`` forms all work.

    Same rules as the ``ollama`` client: a bare host gets port 11434, a URL keeps the port it names.
    """
    host = (host or "").strip().rstrip("/") or "127.0.0.1:11434"
    if "://" in host:
        return host
    if host.startswith(":"):
        host = "127.0.0.1" + host
    netloc = host.split("/", 1)[0]
    has_port = netloc.rsplit("]", 1)[-1].count(":") == 1 if netloc.startswith("[") else ":" in netloc
    if not has_port:
        host = netloc + ":11434" + host[len(netloc):]
    return "http://" + host


def _display_url(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages and cache keys."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _map_bounded(fn, items: list, concurrency: int) -> list:
    """``[fn(x) for x in items]`` with at most ``concurrency`` calls in flight, in order.

    On the first failure the calls not yet started are cancelled, so a dead server costs one
    round of retries, not one per prompt.
    """
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


class OllamaTeacher(Teacher):
    """A model served by Ollama, through the official client; prompts run concurrently.

    A string prompt goes to ``/api/generate`` with ``raw=True`` (the few-shot text is already the
    whole prompt, so Ollama's chat template must not wrap it); a message list goes to ``/api/chat``.
    Ollama has no ``n``: each of the ``n`` samples is its own request, with seed ``seed + i``.
    Transient failures (connection refused or reset, time-outs, 429 and 5xx answers) are retried
    ``retries`` times with exponential backoff from ``backoff`` seconds; what still fails raises one
    ``TeacherError`` that says what to do.
    """

    backend = "ollama"

    def __init__(self, model: str, host: str | None = None, concurrency: int = 2, timeout: float = 120.0,
                 retries: int = 3, backoff: float = 0.5):
        super().__init__(model)
        import ollama

        self.host = _ollama_url(host or os.environ.get("OLLAMA_HOST"))
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        # The client adds OLLAMA_API_KEY (if set) as a header itself; it is never stored here.
        self.client = ollama.Client(host=self.host, timeout=timeout)

    def generate(self, prompts, n=1, temperature=0.0, max_new_tokens=64, seed=0):
        return _map_bounded(lambda p: self._generate_one(p, n, temperature, max_new_tokens, seed),
                            list(prompts), self.concurrency)

    def _generate_one(self, prompt, n, temperature, max_new_tokens, seed):
        outs = []
        for i in range(n):
            options = {"temperature": temperature, "num_predict": max_new_tokens, "seed": seed + i, "stop": STOP}
            if isinstance(prompt, str):
                def call(options=options):
                    return self.client.generate(model=self.model, prompt=prompt, raw=True, options=options).response
            else:
                def call(options=options):
                    return self.client.chat(model=self.model, messages=prompt, options=options).message.content
            outs.append(_call_with_retries(call, retries=self.retries, backoff=self.backoff,
                                           transient=self._transient, explain=self._explain,
                                           where=f"Ollama at {self.host}") or "")
        return outs

    @staticmethod
    def _transient(exc: Exception) -> bool:
        import httpx
        import ollama

        if isinstance(exc, ollama.ResponseError):
            return exc.status_code in _TRANSIENT_STATUS
        # The client turns a refused connection into the builtin ConnectionError; the rest stay httpx's.
        return isinstance(exc, (ConnectionError, httpx.TimeoutException, httpx.NetworkError,
                                httpx.RemoteProtocolError))

    def _explain(self, exc: Exception, tries: int) -> str | None:
        import httpx
        import ollama

        where, model = f"Ollama at {self.host}", self.model
        if isinstance(exc, ollama.ResponseError):
            status, detail = exc.status_code, _excerpt(exc.error, os.environ.get("OLLAMA_API_KEY"))
            if status == 404:
                return (f"{where} has no model {model!r} (404: {detail}). Pull it with `ollama pull {model}` "
                        "on the server's machine, or use a name that `ollama list` shows.")
            if status in (401, 403):
                return (f"{where} refused the request for model {model!r} ({status}: {detail}). Check that "
                        "OLLAMA_HOST points at your server; behind an authenticating proxy, set OLLAMA_API_KEY.")
            if status == 429:
                return (f"{where} kept answering 429 (too many requests) for model {model!r}{_tries(tries)}: "
                        f"{detail}. Lower concurrency (now {self.concurrency}) or raise backoff.")
            if status >= 500:
                return (f"{where} answered {status} for model {model!r}{_tries(tries)}: {detail}. Check the "
                        "server's log (the `ollama serve` output); a model too big for memory fails like this.")
            return f"{where} rejected the request for model {model!r} ({status}): {detail}."
        if isinstance(exc, httpx.TimeoutException):
            return (f"{where} did not answer within the timeout of {self.timeout:g} s for model {model!r}"
                    f"{_tries(tries)}. A large model (or its first load) can take longer: raise the timeout, "
                    "e.g. OllamaTeacher(..., timeout=600), or lower max_new_tokens.")
        if isinstance(exc, (ConnectionError, httpx.ConnectError)):
            return (f"No Ollama server answers at {self.host}{_tries(tries)} (connection refused). Start it "
                    "(`ollama serve`) or set OLLAMA_HOST to where it runs (e.g. OLLAMA_HOST=127.0.0.1:11434).")
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
            return (f"The connection to {where} broke{_tries(tries)} ({type(exc).__name__}) while serving "
                    f"model {model!r}. Check that the server is healthy (`ollama ps`, its log) and that "
                    "OLLAMA_HOST points at Ollama and not at another service.")
        return None


class OpenAITeacher(Teacher):
    """Any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, Ollama's /v1).

    A string prompt goes to ``/v1/completions``, a message list to ``/v1/chat/completions``. Servers
    that ignore ``n`` (llama.cpp's does) are asked again, one sample at a time, until ``n`` arrive.
    The API key comes from ``api_key`` or OPENAI_API_KEY and lives only inside the client: it is not
    in ``describe()`` (the cache key), the logs or the error messages. Retries: as ``OllamaTeacher``;
    the client's own retries are off so that ``retries``/``backoff`` mean the same for both backends.
    """

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 4, timeout: float = 120.0, retries: int = 3, backoff: float = 0.5):
        super().__init__(model)
        import openai

        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1").rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"  # local servers accept any key
        self._secret = key if key != "not-needed" else None  # only to blank it out of error messages
        # The client's own retries stay off: their backoff (0.5-8 s) cannot be set, and Ollama's client has
        # none, so one loop (_call_with_retries) gives both backends the same retries, backoff and logs.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)

    def describe(self):
        return {"backend": self.backend, "model": self.model, "base_url": _display_url(self.base_url)}

    def generate(self, prompts, n=1, temperature=0.0, max_new_tokens=64, seed=0):
        return _map_bounded(lambda p: self._generate_one(p, n, temperature, max_new_tokens, seed),
                            list(prompts), self.concurrency)

    def _generate_one(self, prompt, n, temperature, max_new_tokens, seed):
        outs: list[str] = []
        while len(outs) < n:
            want = n - len(outs)
            kwargs = dict(model=self.model, n=want, temperature=temperature, max_tokens=max_new_tokens,
                          seed=seed + len(outs), stop=STOP)
            if isinstance(prompt, str):
                def call(kwargs=kwargs):
                    return [c.text or "" for c in self.client.completions.create(prompt=prompt, **kwargs).choices]
            else:
                def call(kwargs=kwargs):
                    result = self.client.chat.completions.create(messages=prompt, **kwargs)
                    return [c.message.content or "" for c in result.choices]
            got = _call_with_retries(call, retries=self.retries, backoff=self.backoff, transient=self._transient,
                                     explain=self._explain, where=f"{_display_url(self.base_url)}")
            if not got:
                raise TeacherError(f"{_display_url(self.base_url)} answered with no choices for model "
                                   f"{self.model!r}: check that it serves completions for this model.")
            outs.extend(got[:want])
        return outs

    @staticmethod
    def _transient(exc: Exception) -> bool:
        import openai

        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in _TRANSIENT_STATUS
        return isinstance(exc, openai.APIConnectionError)  # refused, reset and timed out alike

    def _explain(self, exc: Exception, tries: int) -> str | None:
        import openai

        url, model = _display_url(self.base_url), self.model
        if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError: it is a subclass
            return (f"The OpenAI-compatible server at {url} did not answer within the timeout of "
                    f"{self.timeout:g} s for model {model!r}{_tries(tries)}. A busy or slow server can take "
                    "longer: raise the timeout, e.g. OpenAITeacher(..., timeout=600), or lower max_new_tokens.")
        if isinstance(exc, openai.APIConnectionError):
            return (f"No OpenAI-compatible server answers at {url}{_tries(tries)}. Start it (e.g. "
                    "`python -m utils.llamacpp --model FILE.gguf`, llama_cpp.server safe on AMX CPUs; `vllm serve MODEL`) or set OPENAI_BASE_URL "
                    "to where it runs (it usually ends in /v1).")
        if isinstance(exc, openai.APIStatusError):
            status, detail = exc.status_code, _excerpt(exc.response.text, self._secret)
            if status in (401, 403):
                return (f"{url} refused the request for model {model!r} ({status}: {detail}). Check OPENAI_API_KEY "
                        "(or pass api_key=...): it must be a key this server accepts.")
            if status == 404:
                return (f"{url} answered 404 for model {model!r} ({detail}). Check the model name (GET "
                        f"{url}/models lists what the server serves) and that the base URL ends in /v1.")
            if status == 429:
                return (f"{url} kept answering 429 (rate limited) for model {model!r}{_tries(tries)}: {detail}. "
                        f"Lower concurrency (now {self.concurrency}), raise backoff, or check your quota.")
            if status >= 500:
                return (f"{url} answered {status} for model {model!r}{_tries(tries)}: {detail}. "
                        "Check the server's log.")
            return f"{url} rejected the request for model {model!r} ({status}): {detail}."
        return None


class VLLMTeacher(Teacher):
    """Offline batch generation with vLLM on a GPU (optional: ``pip install vllm``; never required).

    vLLM schedules the whole prompt list at once (continuous batching), which is the fastest
    way to annotate a large training set on one machine with a GPU.
    """

    backend = "vllm"

    def __init__(self, model: str, **engine_kwargs):
        super().__init__(model)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise TeacherError("The vllm backend needs vLLM, which is not installed (it needs a CUDA GPU): "
                               "pip install vllm. On a CPU use llamacpp or transformers.") from exc
        from utils.models import resolve_model

        # trust_remote_code stays off: a model that needs it must be opted into by the user.
        self.llm = LLM(model=resolve_model(model), trust_remote_code=False, **engine_kwargs)

    def generate(self, prompts, n=1, temperature=0.0, max_new_tokens=64, seed=0):
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, seed=seed, stop=STOP)
        if all(isinstance(p, str) for p in prompts):
            results = self.llm.generate(prompts, params)
        else:
            results = self.llm.chat(prompts, params)
        return [[choice.text for choice in result.outputs] for result in results]


BACKENDS = {"llamacpp": LlamaCppTeacher, "transformers": TransformersTeacher,
            "ollama": OllamaTeacher, "openai": OpenAITeacher, "vllm": VLLMTeacher}


def _cut_stop(text: str) -> str:
    cut = len(text)
    for stop in STOP:
        index = text.find(stop)
        if index >= 0:
            cut = min(cut, index)
    return text[:cut]


def load_teacher(backend: str, model: str, **kwargs) -> Teacher:
    """A teacher by backend name; unknown names list the valid ones."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown teacher backend {backend!r}. Valid backends: {', '.join(BACKENDS)}.")
    return BACKENDS[backend](model, **kwargs)


class GenerationCache:
    """An append-only JSONL file of teacher outputs keyed by (teacher, prompt, sampling).

    Each result is written and flushed to disk as it arrives, so a crash or Ctrl-C loses nothing
    already generated. A torn last line (the process died mid-write) is dropped on load and that
    prompt is generated again.
    """

    def __init__(self, path: str | Path, seed_paths: list[str | Path] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, list[str]] = {}
        self.torn = 0
        self.seeded = 0
        for seed_path in seed_paths:  # read-only caches shipped with the course (data/teacher_cache)
            if Path(seed_path).exists():
                before = len(self.entries)
                self._load(Path(seed_path), repair=False)
                self.seeded += len(self.entries) - before
        if self.path.exists():
            self._load(self.path, repair=True)

    def _load(self, path: Path, repair: bool) -> None:
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # Keep the complete lines; the torn tail is redone.
            raw = raw[: raw.rfind(b"\n") + 1]
            if repair:
                path.write_bytes(raw)
            self.torn += 1
        for line in raw.decode("utf-8").splitlines():
            try:
                entry = json.loads(line)
                self.entries[entry["key"]] = entry["outputs"]
            except (json.JSONDecodeError, KeyError):
                self.torn += 1

    @staticmethod
    def key(teacher: Teacher, prompt, sampling: dict) -> str:
        """A stable hash of what determines the outputs (never a secret: keys are not in it)."""
        blob = json.dumps({"teacher": teacher.describe(), "prompt": prompt, "sampling": sampling}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> list[str] | None:
        return self.entries.get(key)

    def put(self, key: str, outputs: list[str], meta: dict | None = None) -> None:
        """Append one result and force it to disk."""
        line = json.dumps({"key": key, "outputs": outputs, **(meta or {})}, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.entries[key] = outputs


def generate_rationales(teacher: Teacher, task: Task | str, examples: list[dict], cache_path: str | Path,
                        n: int = 1, temperature: float = 0.7, max_new_tokens: int = 72, n_shots: int = 4,
                        chat: bool = False, seed: int = 0, greedy_first: bool = True,
                        batch_size: int = 8, label_field: str = "equation", desc: str = "teacher",
                        seed_caches: list[str | Path] = ()) -> list[dict]:
    """Prompt the teacher for every example and parse what it writes.

    With ``n > 1`` (self-consistency) each example gets ``n`` answers: the first greedy when
    ``greedy_first``, the rest sampled at ``temperature``. The answers are parsed, voted on by
    value, and the record keeps every sample, the voted label, a rationale that agrees with
    the vote and, when the gold label is known, a rationale whose answer is correct.
    ``seed_caches`` are read-only caches consulted first (the course ships one for ``tiny``).
    """
    from functools import partial

    task = resolve_task(task)
    answers_match = partial(task_correct, task)

    cache = GenerationCache(cache_path, seed_caches)
    greedy = {"temperature": 0.0, "max_new_tokens": max_new_tokens, "seed": seed}
    sampled = {"temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed}
    plan = []  # (example index, prompt, sampling, n)
    for i, example in enumerate(examples):
        prompt = build_prompt(example, task.name, n_shots=n_shots, chat=chat)
        if n == 1 or greedy_first:
            plan.append((i, prompt, greedy, 1))
        if n > 1:
            plan.append((i, prompt, sampled, n - 1 if greedy_first else n))
    outputs: dict[int, list[str]] = {i: [] for i in range(len(examples))}
    todo = []
    for item in plan:
        i, prompt, sampling, count = item
        hit = cache.get(GenerationCache.key(teacher, prompt, {**sampling, "n": count}))
        if hit is not None:
            outputs[i].extend(hit)
        else:
            todo.append(item)
    print(f"{desc}: {len(plan) - len(todo)} of {len(plan)} prompts cached, {len(todo)} to generate")
    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc=desc, unit="prompt") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for group_sampling in (greedy, sampled):
                group = [c for c in chunk if c[2] is group_sampling]
                if not group:
                    continue
                count = group[0][3]
                texts = teacher.generate([c[1] for c in group], n=count, temperature=group_sampling["temperature"],
                                         max_new_tokens=max_new_tokens, seed=seed)
                for (i, prompt, sampling, cnt), outs in zip(group, texts):
                    cache.put(GenerationCache.key(teacher, prompt, {**sampling, "n": cnt}), outs,
                              {"id": examples[i].get("id"), "sampling": {**sampling, "n": cnt}})
                    outputs[i].extend(outs)
                    bar.update(1)
    return [_make_record(ex, outputs[i], task, label_field, answers_match) for i, ex in enumerate(examples)]


def _make_record(example: dict, texts: list[str], task: Task, label_field: str, answers_match) -> dict:
    samples = []
    for text in texts:
        parsed = parse_cot_detailed(text, task)
        if parsed.label is not None and label_key(parsed.label, task) is None:
            parsed.error, parsed.label = f"label {parsed.label!r} is not a valid answer", None
        samples.append({"text": text, "rationale": parsed.rationale, "label": parsed.label, "error": parsed.error})
    vote, votes = majority_vote([s["label"] for s in samples], task)
    agreeing = next((s for s in samples if s["label"] is not None and
                     label_key(s["label"], task) == label_key(vote, task)), None)
    gold = example.get(label_field)
    record = {
        "id": example.get("id"),
        "input": example["input"],
        "gold": gold,
        "samples": samples,
        "teacher_label": vote,
        "votes": votes,
        "rationale": agreeing["rationale"] if agreeing else (samples[0]["rationale"] if samples else ""),
        "parse_failures": sum(s["label"] is None for s in samples),
    }
    if gold is not None:
        record["teacher_correct"] = answers_match(vote, gold)
        correct = next((s for s in samples if answers_match(s["label"], gold)), None)
        record["correct_rationale"] = correct["rationale"] if correct else None
        record["greedy_correct"] = bool(samples) and answers_match(samples[0]["label"], gold)
    return record


def save_records(records: list[dict], path: str | Path) -> Path:
    """Write teacher records as JSONL (one example per line), atomically."""
    from utils.config import atomic_write_text

    return atomic_write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def load_records(path: str | Path) -> list[dict]:
    """Read teacher records written by ``save_records``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No teacher records at {path}: run notebook 01 (or `python -m utils teacher`) first.")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize_records(records: list[dict]) -> dict:
    """Counts a reader wants: accuracy (voted and greedy), parse failures, yield of correct rationales."""
    total = len(records)
    samples = sum(len(r["samples"]) for r in records)
    summary = {
        "examples": total,
        "samples": samples,
        "parse_failures": sum(r["parse_failures"] for r in records),
        "parse_failure_rate": (sum(r["parse_failures"] for r in records) / samples) if samples else 0.0,
    }
    if total and "teacher_correct" in records[0]:
        summary["accuracy_vote"] = sum(r["teacher_correct"] for r in records) / total
        summary["accuracy_greedy"] = sum(r["greedy_correct"] for r in records) / total
        summary["correct_rationale_yield"] = sum(r["correct_rationale"] is not None for r in records) / total
    return summary


def teacher_from_config(config) -> Teacher:
    """The teacher a config names (backend, model, server address)."""
    kwargs = {}
    if config.teacher_base_url and config.teacher_backend == "ollama":
        kwargs["host"] = config.teacher_base_url
    if config.teacher_base_url and config.teacher_backend == "openai":
        kwargs["base_url"] = config.teacher_base_url
    return load_teacher(config.teacher_backend, config.teacher_model, **kwargs)


def annotate(teacher: Teacher, config, examples: list[dict], cache_path: str | Path, split: str) -> list[dict]:
    """Run ``generate_rationales`` with a config's settings: self-consistency on train, greedy on test."""
    from utils.config import REPO_ROOT

    task = resolve_task(config.task)
    seeds = [REPO_ROOT / config.teacher_cache_seed] if config.teacher_cache_seed else []
    return generate_rationales(
        teacher, task, examples, cache_path,
        n=config.n_samples if split == "train" else 1,
        temperature=config.temperature, max_new_tokens=config.max_new_tokens, n_shots=config.n_shots,
        seed=config.seed, label_field=task.label_field, desc=f"teacher/{split}",
        seed_caches=seeds)
