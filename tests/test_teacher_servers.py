"""The network teachers against real servers on 127.0.0.1.

Ollama: the official client against a loopback server that speaks the Ollama API and answers with
the bundled model (tests/protocol_servers.py). OpenAI: the official client against the real
``llama_cpp.server`` and, for the error paths, a stdlib server that fails on purpose. Every wait is
bounded; a live Ollama (``network``) is used only when one answers.
"""

import json
import logging
import os
import traceback

import httpx
import pytest

from tests.greedy_check import TOLERANCE, greedy_gaps
from tests.protocol_servers import FaultServer, LlamaCppServer, OllamaServer, free_port
from utils.loaders import select_examples
from utils.prompts import build_prompt
from utils.rationales import parse_cot
from utils.teacher import STOP, OllamaTeacher, OpenAITeacher, TeacherError, generate_rationales

MODEL = "smollm2:135m"  # the name the loopback Ollama serves
FAST = {"retries": 2, "backoff": 0.01}  # real retries, without real waiting


@pytest.fixture(scope="module")
def examples():
    return select_examples("arith", "train", 2, max_ops=1)


@pytest.fixture(scope="module")
def _ollama_with_model():
    with OllamaServer(MODEL) as server:
        yield server


@pytest.fixture
def ollama(_ollama_with_model):
    """The loopback Ollama with the bundled model behind it (loaded once per module); no faults."""
    _ollama_with_model.clear()
    yield _ollama_with_model
    _ollama_with_model.clear()


@pytest.fixture
def bare_ollama():
    """A loopback Ollama whose model never loads: for the paths that fail before generation."""
    with OllamaServer(MODEL) as server:
        yield server


@pytest.fixture(scope="module")
def _llamacpp(tmp_path_factory):
    server = LlamaCppServer(log_dir=tmp_path_factory.mktemp("llama_cpp_server"))
    yield server
    server.stop()


@pytest.fixture
def llamacpp_server(_llamacpp):
    """The real llama_cpp.server (started once; started again if a test stopped it)."""
    if not _llamacpp.running:
        _llamacpp.start()
    return _llamacpp


def _assert_real_text(texts: list[str]):
    for text in texts:
        assert isinstance(text, str) and text.strip(), "the model wrote nothing"
        rationale, _label = parse_cot(text, "arith")  # the label may be None: a 135M model errs
        assert isinstance(rationale, str)


# --- Ollama -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ollama_completion_form_uses_raw_generate(ollama, examples):
    teacher = OllamaTeacher(MODEL, host=ollama.url, concurrency=2, **FAST)
    prompts = [build_prompt(ex, "arith", n_shots=2) for ex in examples]
    outputs = teacher.generate(prompts, n=2, temperature=0.7, max_new_tokens=32, seed=5)
    assert [len(o) for o in outputs] == [2, 2]
    _assert_real_text([t for o in outputs for t in o])
    sent = [r["body"] for r in ollama.seen("/api/generate")]
    assert len(sent) == 4
    assert all(b["raw"] is True and b["stream"] is False and b["prompt"] in prompts for b in sent)
    assert sorted(b["options"]["seed"] for b in sent) == [5, 5, 6, 6]  # seed + i for the i-th sample
    assert all(b["options"]["num_predict"] == 32 and b["options"]["stop"] == STOP for b in sent)
    assert ollama.max_in_flight <= 2


@pytest.mark.slow
def test_ollama_chat_messages_use_chat(ollama, examples):
    teacher = OllamaTeacher(MODEL, host=ollama.url, **FAST)
    messages = build_prompt(examples[0], "arith", n_shots=2, chat=True)
    outputs = teacher.generate([messages], n=1, max_new_tokens=32)
    assert len(outputs) == 1 and len(outputs[0]) == 1
    _assert_real_text(outputs[0])
    (request,) = ollama.seen("/api/chat")
    assert request["body"]["messages"] == messages and request["body"]["options"]["temperature"] == 0.0
    assert not ollama.seen("/api/generate")


@pytest.mark.slow
def test_ollama_server_streams_ndjson_and_answers_whole(ollama, examples):
    """The client asks for whole answers; the API's default is a stream: both are greedy text.

    Not compared with each other: llama.cpp reuses the prompt cache between calls and rounds
    differently with another batch shape, so two greedy calls can part at a near-tie. Each is
    checked against the model instead (tests/greedy_check.py)."""
    import ollama as ollama_client

    prompt = build_prompt(examples[0], "arith", n_shots=2)
    # repeat_penalty 1.0: the greedy pick on the raw logits, which is what the check scores
    request = {"model": MODEL, "prompt": prompt, "raw": True,
               "options": {"temperature": 0, "num_predict": 24, "seed": 1, "stop": STOP, "repeat_penalty": 1.0}}
    whole = httpx.post(f"{ollama.url}/api/generate", json={**request, "stream": False}, timeout=60).json()
    assert whole["done"] is True and whole["response"].strip() and whole["eval_count"] > 0

    with httpx.stream("POST", f"{ollama.url}/api/generate", json=request, timeout=60) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) > 2 and all(not part["done"] for part in lines[:-1]) and lines[-1]["done"] is True
    streamed = "".join(part["response"] for part in lines)
    assert streamed.strip() and lines[-1]["response"] == ""
    for text in (whole["response"], streamed):
        gaps = greedy_gaps(prompt, text)
        assert max(gaps) <= TOLERANCE, (text, [round(g, 2) for g in gaps])

    chat = {"model": MODEL, "messages": [{"role": "user", "content": "What is 2 + 3?"}],
            "options": {"temperature": 0, "num_predict": 12}}
    with httpx.stream("POST", f"{ollama.url}/api/chat", json=chat, timeout=60) as response:
        parts = [json.loads(line) for line in response.iter_lines() if line]
    assert parts[-1]["done"] is True and "".join(p["message"]["content"] for p in parts).strip()

    # The official client parses the stream too (its stream=True path).
    client = ollama_client.Client(host=ollama.url, timeout=60)
    streamed = "".join(part.response for part in client.generate(**request, stream=True))
    assert streamed == whole["response"]
    assert client.list().models[0].model == MODEL


def test_ollama_concurrency_is_bounded(bare_ollama):
    # Empty prompts only "load" the model (Ollama's API): no generation, so only the bound is measured.
    for concurrency in (1, 3):
        bare_ollama.clear()
        bare_ollama.inject(delay=0.2)
        teacher = OllamaTeacher(MODEL, host=bare_ollama.url, concurrency=concurrency, **FAST)
        assert teacher.generate([""] * 6) == [[""]] * 6
        assert bare_ollama.max_in_flight == concurrency


def test_ollama_unknown_model_says_ollama_pull(bare_ollama):
    teacher = OllamaTeacher("llama3.2:1b", host=bare_ollama.url, **FAST)
    with pytest.raises(TeacherError, match=r"`ollama pull llama3\.2:1b`") as info:
        teacher.generate(["Q: 1 + 1?\nA:"])
    assert bare_ollama.url in str(info.value) and "not found" in str(info.value)
    assert len(bare_ollama.seen("/api/generate")) == 1  # a 404 is not retried


def test_ollama_host_from_environment_without_scheme(bare_ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{bare_ollama.port}")
    teacher = OllamaTeacher("missing-model", **FAST)
    assert teacher.host == bare_ollama.url
    with pytest.raises(TeacherError, match="ollama pull missing-model"):  # answered by this server
        teacher.generate([[{"role": "user", "content": "hi"}]])
    assert len(bare_ollama.seen("/api/chat")) == 1


def test_ollama_500_is_retried_then_explained(bare_ollama):
    bare_ollama.inject(status=500, body={"error": "llama runner process has terminated"})
    teacher = OllamaTeacher(MODEL, host=bare_ollama.url, **FAST)
    with pytest.raises(TeacherError) as info:
        teacher.generate(["Q: 1 + 1?\nA:"])
    message = str(info.value)
    assert "500" in message and "llama runner process has terminated" in message and "after 3 tries" in message
    assert bare_ollama.url in message and MODEL in message
    assert len(bare_ollama.seen("/api/generate")) == 3  # the first try and FAST's 2 retries


@pytest.mark.slow
def test_ollama_transient_503_recovers(ollama, examples):
    ollama.inject(status=503, times=2)
    teacher = OllamaTeacher(MODEL, host=ollama.url, **FAST)
    outputs = teacher.generate([build_prompt(examples[0], "arith", n_shots=2)], max_new_tokens=24)
    _assert_real_text(outputs[0])
    assert len(ollama.seen("/api/generate")) == 3  # two 503s, then the answer


def test_ollama_timeout_names_the_timeout(bare_ollama):
    bare_ollama.inject(delay=10)  # longer than the client waits; cut short when the server stops
    teacher = OllamaTeacher(MODEL, host=bare_ollama.url, timeout=0.5, retries=1, backoff=0.01)
    with pytest.raises(TeacherError, match=r"did not answer within the timeout of 0\.5 s") as info:
        teacher.generate(["Q: 1 + 1?\nA:"])
    assert "raise the timeout" in str(info.value)
    assert len(bare_ollama.seen("/api/generate")) == 2


def test_ollama_server_down_says_start_it():
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    teacher = OllamaTeacher(MODEL, host=host, **FAST)
    with pytest.raises(TeacherError, match="No Ollama server answers at " + host) as info:
        teacher.generate(["Q: 1 + 1?\nA:", "Q: 2 + 2?\nA:"])
    assert "`ollama serve`" in str(info.value) and "OLLAMA_HOST" in str(info.value)


@pytest.mark.network
def test_live_ollama_lists_and_generates():
    host = os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"
    url = OllamaTeacher("probe", host=host).host
    try:
        tags = httpx.get(f"{url}/api/tags", timeout=1.0)
        tags.raise_for_status()
    except httpx.HTTPError as exc:
        pytest.skip(f"no Ollama answers GET {url}/api/tags within 1 s ({type(exc).__name__})")
    models = [m.get("model") or m.get("name") for m in tags.json().get("models", [])]
    if not models:
        pytest.skip(f"the Ollama at {url} has no models pulled")
    teacher = OllamaTeacher(models[0], host=host, timeout=300, retries=1)
    outputs = teacher.generate(["Q: Sara has 3 apples and buys 2 more. How many apples does she have?\nA:"],
                               max_new_tokens=32)
    assert outputs[0][0].strip()


# --- OpenAI-compatible ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_openai_completions_against_llama_cpp_server(llamacpp_server, examples):
    teacher = OpenAITeacher("smollm2", base_url=llamacpp_server.base_url, **FAST)
    outputs = teacher.generate([build_prompt(examples[0], "arith", n_shots=2)], n=2, temperature=0.7,
                               max_new_tokens=32)
    assert len(outputs[0]) == 2  # llama.cpp's server ignores n: the teacher asked again
    _assert_real_text(outputs[0])


@pytest.mark.slow
def test_openai_chat_against_llama_cpp_server(llamacpp_server, examples):
    teacher = OpenAITeacher("smollm2", base_url=llamacpp_server.base_url, **FAST)
    outputs = teacher.generate([build_prompt(examples[0], "arith", n_shots=2, chat=True)], max_new_tokens=32)
    assert len(outputs[0]) == 1
    _assert_real_text(outputs[0])


@pytest.mark.slow
def test_generate_rationales_through_llama_cpp_server_then_cache(llamacpp_server, examples, tmp_path):
    cache = tmp_path / "teacher.jsonl"
    teacher = OpenAITeacher("smollm2", base_url=llamacpp_server.base_url, **FAST)
    kwargs = dict(n=1, max_new_tokens=32, n_shots=2)
    first = generate_rationales(teacher, "arith", examples, cache, **kwargs)
    assert len(first) == 2 and all(r["samples"][0]["text"].strip() for r in first)
    assert len(cache.read_text().splitlines()) == 2

    llamacpp_server.stop()  # any request now fails (retries=0: at once)
    offline = OpenAITeacher("smollm2", base_url=llamacpp_server.base_url, retries=0)
    second = generate_rationales(offline, "arith", examples, cache, **kwargs)
    assert [r["samples"] for r in second] == [r["samples"] for r in first]
    with pytest.raises(TeacherError, match="No OpenAI-compatible server answers"):  # it really is down
        offline.generate(["Q: 1 + 1?\nA:"])


@pytest.mark.parametrize("status", [500, 429])
def test_openai_transient_status_is_retried_then_explained(status):
    with FaultServer(status=status) as server:
        teacher = OpenAITeacher("m", base_url=f"{server.url}/v1", **FAST)
        with pytest.raises(TeacherError) as info:
            teacher.generate(["Q: 1 + 1?\nA:"])
        requests = server.seen("/v1/completions")
    message = str(info.value)
    assert str(status) in message and f"injected fault: HTTP {status}" in message and "after 3 tries" in message
    assert server.url in message and "'m'" in message
    assert len(requests) == 3


def test_openai_api_key_is_used_but_never_shown(monkeypatch, caplog):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    caplog.set_level(logging.DEBUG, logger="utils.teacher")
    with FaultServer(status=401, echo_auth=True) as server:  # it quotes the key back, as some servers do
        teacher = OpenAITeacher("m", base_url=f"{server.url}/v1", **FAST)
        with pytest.raises(TeacherError, match="Check OPENAI_API_KEY") as auth:
            teacher.generate([[{"role": "user", "content": "hi"}]])
        (request,) = server.seen("/v1/chat/completions")  # an auth error is not retried
    assert request["headers"]["authorization"] == f"Bearer {secret}"  # the key from the environment was sent
    assert "401" in str(auth.value) and "Incorrect API key provided" in str(auth.value)
    with FaultServer(status=503, echo_auth=True) as server:  # retried: the retries are logged
        teacher = OpenAITeacher("m", base_url=f"{server.url}/v1", **FAST)
        with pytest.raises(TeacherError, match="503") as busy:
            teacher.generate(["Q: 1 + 1?\nA:"])
    assert "retrying" in caplog.text
    for shown in (auth.value, busy.value):
        assert secret not in "".join(traceback.format_exception(shown))
    assert secret not in json.dumps(teacher.describe()) and secret not in caplog.text


def test_openai_timeout_names_the_timeout():
    with FaultServer(status=200, delay=10) as server:
        teacher = OpenAITeacher("m", base_url=f"{server.url}/v1", timeout=0.5, retries=1, backoff=0.01)
        with pytest.raises(TeacherError, match=r"did not answer within the timeout of 0\.5 s") as info:
            teacher.generate(["Q: 1 + 1?\nA:"])
        assert len(server.seen("/v1/completions")) == 2
    assert "raise the timeout" in str(info.value)


def test_openai_server_down_says_start_it():
    url = f"http://127.0.0.1:{free_port()}/v1"
    teacher = OpenAITeacher("m", base_url=url, **FAST)
    with pytest.raises(TeacherError, match="No OpenAI-compatible server answers at " + url) as info:
        teacher.generate(["Q: 1 + 1?\nA:"])
    assert "OPENAI_BASE_URL" in str(info.value) and "after 3 tries" in str(info.value)
