"""The HTTP service on 127.0.0.1 (answers, validation, batching, back-pressure, the CLI) and the
Gradio demo, on one real, briefly trained 2-layer student (tests/exported_student.py)."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.exported_student import label_only
from tests.protocol_servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the HTTP service --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(predictor):
    from utils.serve import BackgroundServer, create_app

    app = create_app(predictor, max_inputs=4, max_chars=300, max_body_bytes=8192)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield client


@pytest.mark.slow
def test_service_answers_one_input_a_list_and_rationales_as_the_predictor_does(service, predictor, run):
    inputs = list(run["test"]["input"][:3])
    expected = predictor.predict(inputs)
    response = service.post("/predict", json={"inputs": inputs[0]})
    assert response.status_code == 200
    assert response.json() == {"model": run["out"].name, "predictions": [{"label": expected[0]["label"], "rationale": None}]}
    response = service.post("/predict", json={"inputs": inputs, "rationale": True})
    assert response.status_code == 200
    answers = response.json()["predictions"]
    assert [a["label"] for a in answers] == [e["label"] for e in expected]
    assert all(isinstance(a["rationale"], str) for a in answers)


@pytest.mark.slow
def test_service_health_metadata_and_openapi_page(service, run):
    assert service.get("/healthz").json()["status"] == "ok"
    meta = service.get("/metadata").json()
    assert meta["task"] == "arith" and meta["mode"] == "dss" and meta["family"] == "causal"
    assert meta["metrics"]["accuracy"] == run["evaluation"]["accuracy"]
    assert meta["limits"]["max_inputs"] == 4 and meta["parameters"] > 0
    docs = service.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = service.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and {"400", "413", "422"} <= set(spec["paths"]["/predict"]["post"]["responses"])


BAD_REQUESTS = [
    # (name, request keyword arguments, status, a piece of the message)
    ("malformed JSON", {"content": b'{"inputs": ["a",', "headers": {"content-type": "application/json"}}, 400,
     "Malformed JSON"),
    ("not JSON at all", {"content": b"inputs=a", "headers": {"content-type": "application/json"}}, 400, "Malformed JSON"),
    ("no body", {}, 422, "Field required"),
    ("a number as input", {"json": {"inputs": 5}}, 422, "valid string"),
    ("a number in the list", {"json": {"inputs": ["a", 3]}}, 422, "valid string"),
    ("null input", {"json": {"inputs": None}}, 422, "valid string"),
    ("a string for rationale", {"json": {"inputs": "a", "rationale": "yes"}}, 422, "valid boolean"),
    ("a list as body", {"json": ["a"]}, 422, "valid dictionary"),
    ("a misspelt field", {"json": {"input": "a"}}, 422, "Extra inputs are not permitted"),
    ("empty input", {"json": {"inputs": ""}}, 422, "empty"),
    ("whitespace input", {"json": {"inputs": " \n\t "}}, 422, "empty"),
    ("empty list", {"json": {"inputs": []}}, 422, "list of inputs is empty"),
    ("an empty item", {"json": {"inputs": ["a", ""]}}, 422, "input 1 is empty"),
    ("too many inputs", {"json": {"inputs": ["a"] * 5}}, 422, "at most 4"),
    ("too long an input", {"json": {"inputs": "x" * 301}}, 422, "at most 300"),
    ("oversized body", {"json": {"inputs": "x" * 20000}}, 413, "larger than 8192 bytes"),
]


@pytest.mark.slow
def test_service_rejects_bad_requests_with_a_4xx_and_a_message_and_stays_up(service):
    for name, kwargs, status, message in BAD_REQUESTS:
        response = service.post("/predict", **kwargs)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text[:300]}"
        assert message in response.text, f"{name}: {response.text[:300]}"
        assert "x" * 300 not in response.text, f"{name}: the service echoed the oversized input"
    chunked = service.post("/predict", content=iter([b'{"inputs": "', b"x" * 6000, b"x" * 6000, b'"}']),
                           headers={"content-type": "application/json"})  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413, chunked.text
    assert service.get("/predict").status_code == 405
    assert service.get("/healthz").json()["status"] == "ok"
    assert service.post("/predict", json={"inputs": "Ana has 3 pens and buys 2 more."}).status_code == 200


@pytest.mark.slow
def test_concurrent_requests_are_all_answered_in_shared_batches(service, predictor, run):
    from utils.serve import load_table, load_test

    inputs = list(run["test"]["input"])
    expected = {text: predictor.predict([text])[0]["label"] for text in inputs}
    before = service.get("/healthz").json()
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda text: service.post("/predict", json={"inputs": text}), inputs * 2))
    assert [r.status_code for r in responses] == [200] * 12
    labels = [r.json()["predictions"][0]["label"] for r in responses]
    assert len(labels) == 12 and all(isinstance(label, str) for label in labels)
    # inputs padded together with others may differ in the last bits; most answers must still match
    assert sum(label == expected[text] for label, text in zip(labels, inputs * 2)) >= 10
    after = service.get("/healthz").json()
    assert after["largest_batch"] > 1, "concurrent requests were never batched together"
    assert after["batches"] - before["batches"] < 12

    summary = load_test(str(service.base_url).rstrip("/"), [{"inputs": t} for t in inputs], concurrency=3)
    assert summary["requests"] == 6 and summary["errors"] == 0 and summary["inputs"] == 6
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
    assert "| student |" in load_table({"student": summary})


@pytest.mark.slow
def test_a_full_queue_answers_503_and_the_service_recovers(predictor):
    from utils.serve import BackgroundServer, create_app

    app = create_app(predictor, max_queue=1, max_batch=1)
    text = "Kofi has 19 marbles and finds 8 more. How many marbles?"
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(lambda _: client.post("/predict", json={"inputs": text}), range(8)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "retry" in busy.json()["detail"]
        assert client.post("/predict", json={"inputs": text}).status_code == 200


@pytest.mark.slow
def test_cli_serves_an_export_on_127_0_0_1(run):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "utils", "serve", str(run["out"]), "--port", str(port),
                                "--host", "127.0.0.1", "--max-inputs", "2"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start within 180 s"
            time.sleep(0.5)
        answer = httpx.post(f"{url}/predict", json={"inputs": "Ana has 3 pens and buys 2 more."}, timeout=120)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
        assert httpx.post(f"{url}/predict", json={"inputs": ["a", "b", "c"]}, timeout=30).status_code == 422
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_service_answers_a_rationale_request_to_a_label_only_student_with_422_and_stays_up(predictor, run):
    from utils.serve import BackgroundServer, create_app

    app = create_app(label_only(predictor, "distill"))
    text = run["test"]["input"][0]
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        assert client.get("/metadata").json()["can_explain"] is False
        refused = client.post("/predict", json={"inputs": [text], "rationale": True})
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "'distill'" in detail and "'dss'" in detail
        assert client.get("/healthz").json()["status"] == "ok"
        answered = client.post("/predict", json={"inputs": text})
        assert answered.status_code == 200
        assert answered.json()["predictions"] == [{"label": predictor.predict(text)[0]["label"], "rationale": None}]


# --- the demo ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gradio_demo_builds_without_launching_and_answers(predictor, run):
    import gradio as gr

    from utils.serve import gradio_demo

    demo = gradio_demo(predictor, examples=list(run["test"]["input"][:2]))
    assert isinstance(demo, gr.Interface)
    text = run["test"]["input"][0]
    label, rationale = demo.fn(text, True)
    expected = predictor.predict([text], rationale=True)[0]
    assert (label, rationale) == (expected["label"], expected["rationale"])
    assert demo.fn("   ", False)[0] == "(type a problem)"


@pytest.mark.slow
def test_gradio_demo_offers_no_rationale_for_a_label_only_student(predictor, run):
    import gradio as gr

    from utils.serve import gradio_demo

    student = label_only(predictor)
    demo = gradio_demo(student, examples=list(run["test"]["input"][:2]))
    assert not any(isinstance(component, gr.Checkbox) for component in demo.input_components)
    assert [c.label for c in demo.output_components] == ["answer"]
    text = run["test"]["input"][0]
    assert demo.fn(text) == predictor.predict(text)[0]["label"]
    assert demo.fn("  ") == "(type a problem)"
    explaining = gradio_demo(predictor)
    assert any(isinstance(component, gr.Checkbox) for component in explaining.input_components)
