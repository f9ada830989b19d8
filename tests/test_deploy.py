"""Deploying the student: export and model card, the predictor, the HTTP service on 127.0.0.1,
GGUF (transformers and llama.cpp read it back), ONNX (onnxruntime), and the Gradio demo.

One 2-layer student (a layer subset of the bundled SmolLM2-135M-Instruct) is trained briefly
once per module, evaluated as notebook 04 does, and exported; every test uses that real model.
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from datasets import Dataset, DatasetDict

from tests.protocol_servers import free_port
from utils.deploy import (
    LABEL_PREFIX,
    Predictor,
    export_student,
    hub_token,
    modelfile_text,
    permute_for_gguf,
    push_to_hub,
    render_modelfile_prompt,
)
from utils.student import format_prompt

REPO_ROOT = Path(__file__).resolve().parent.parent


def _split(examples, rationale=True):
    return Dataset.from_list([
        {"id": ex["id"], "input": ex["input"], "label": ex["equation"], "teacher_label": ex["equation"],
         "rationale": f"{ex['equation']} = {ex['answer']}." if rationale else "", "teacher_correct": True}
        for ex in examples])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as notebooks 03 and 04 leave it: a trained dss student, its evaluation in
    report.json and its predictions; plus the export of that student."""
    from utils.config import load_config
    from utils.evaluation import evaluate_student, save_predictions, write_report
    from utils.models import load_model, load_tokenizer, make_layer_subset_student
    from utils.student import train_student
    from utils.tasks import select_examples

    root = tmp_path_factory.mktemp("deploy")
    base = make_layer_subset_student("smollm2-135m-instruct", 2, root / "base-2layers")
    data = DatasetDict({"train": _split(select_examples("arith", "train", 12, max_ops=1)),
                        "test": _split(select_examples("arith", "test", 6, max_ops=1))})
    config = load_config("tiny", epochs=6.0, batch_size=8, learning_rate=1e-3, max_source_length=64,
                         max_target_length=24)
    run_dir = root / "run"
    checkpoint = run_dir / "student" / "dss"
    train_student(data, config, "dss", checkpoint, init=str(base))
    result = evaluate_student(load_model(checkpoint), load_tokenizer(checkpoint), data["test"], "causal", "arith")
    save_predictions(result["predictions"], run_dir / "eval" / "predictions_dss.jsonl")
    write_report(run_dir, "evaluation", {"task": "arith", "n_test": result["n"],
                                         "teacher": {"accuracy": 0.5, "ci95": [0.1, 0.9], "n": 6},
                                         "students": {"dss": {k: result[k] for k in ("accuracy", "ci95", "n")}}})
    out_dir = export_student(checkpoint, run_dir / "export" / "arith-dss-student")
    return {"dir": run_dir, "checkpoint": checkpoint, "out": out_dir, "test": data["test"], "evaluation": result}


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_pretrained(run["out"])


# --- export, model card, predictor -------------------------------------------------------------------------


@pytest.mark.slow
def test_export_writes_weights_tokenizer_prompt_format_and_a_card_with_the_report_metrics(run):
    out = run["out"]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "student_meta.json", "prompt_format.json",
                 "metrics.json", "README.md"):
        assert (out / name).exists(), f"export lacks {name}"
    assert not list(out.glob("*.bin")) and not list(out.parent.glob("*.tmp-*"))
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    accuracy = run["evaluation"]["accuracy"]
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and header["license"] == "apache-2.0"
    assert header["pipeline_tag"] == "text-generation" and "accuracy" in header["metrics"]
    (result,) = header["model-index"][0]["results"]
    assert result["metrics"][0]["value"] == pytest.approx(accuracy, abs=1e-4)
    for section in ("## Intended use", "## Results", "## Limits", "[label] <problem>"):
        assert section in card
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == accuracy
    fmt = json.loads((out / "prompt_format.json").read_text())
    assert fmt["label_prefix"] == LABEL_PREFIX and fmt["example"].startswith(LABEL_PREFIX) and fmt["example"].endswith("\n")


@pytest.mark.slow
def test_reloaded_export_has_the_checkpoint_weights_and_answers(run, predictor):
    from utils.evaluation import generate_predictions
    from utils.models import load_model, load_tokenizer

    original = load_model(run["checkpoint"])
    exported = predictor.model.state_dict()
    for name, tensor in original.state_dict().items():
        assert np.array_equal(tensor.numpy(), exported[name].numpy()), name
    inputs = list(run["test"]["input"][:3])
    expected = generate_predictions(original, load_tokenizer(run["checkpoint"]), inputs, "causal")
    assert [r["label"] for r in predictor.predict(inputs)] == expected


@pytest.mark.slow
def test_predictor_gives_the_evaluation_answers_with_and_without_rationale(run, predictor):
    saved = [json.loads(line) for line in (run["dir"] / "eval" / "predictions_dss.jsonl").read_text().splitlines()]
    inputs = [row["input"] for row in saved]
    plain = predictor.predict(inputs)
    assert [r["label"] for r in plain] == [row["prediction"] for row in saved]
    assert all(set(r) == {"label"} for r in plain)
    explained = predictor.predict(inputs[:2], rationale=True)
    assert [r["label"] for r in explained] == [row["prediction"] for row in saved[:2]]
    assert all(isinstance(r["rationale"], str) for r in explained)
    one = predictor.predict(inputs[0])  # a single string is a batch of one
    assert len(one) == 1 and one[0]["label"] == saved[0]["prediction"]
    with pytest.raises(ValueError, match="at least one input"):
        predictor.predict([])
    with pytest.raises(TypeError, match="must be a string"):
        predictor.predict(["fine", 3])


@pytest.mark.slow
def test_lora_checkpoint_is_exported_merged(run, tmp_path):
    import torch

    from utils.models import load_model, load_tokenizer
    from utils.student import apply_lora

    base = run["checkpoint"]
    peft_model = apply_lora(load_model(base), "causal", {"r": 4, "alpha": 8})
    torch.manual_seed(123)
    with torch.no_grad():  # LoRA B starts at zero; random values make the merge visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    adapter_dir = tmp_path / "lora" / "student" / "dss"
    peft_model.save_pretrained(adapter_dir)
    load_tokenizer(base).save_pretrained(adapter_dir)
    (adapter_dir / "student_meta.json").write_text((base / "student_meta.json").read_text())
    assert (adapter_dir / "adapter_config.json").exists()

    out = export_student(adapter_dir, tmp_path / "lora-export")
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    ids = torch.tensor([[75, 5072, 77, 216, 33, 34]])
    with torch.no_grad():
        expected = peft_model.merge_and_unload()(ids).logits
        got = load_model(out)(ids).logits
        plain = load_model(base)(ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3)  # the adapters changed the model


def test_push_to_hub_takes_its_token_from_the_environment_only(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        hub_token()
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    assert hub_token() == "hf_secret_value_123"
    with pytest.raises(FileNotFoundError, match="student_meta.json"):
        push_to_hub(tmp_path, "someone/student")
    (tmp_path / "student_meta.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\n---\n")
    with pytest.raises(ValueError, match="user-or-org/name") as info:
        push_to_hub(tmp_path, "no-namespace")
    assert "hf_secret" not in str(info.value)


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


# --- GGUF and Ollama ---------------------------------------------------------------------------------------


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


def test_gguf_and_onnx_refuse_seq2seq_students_clearly(tmp_path):
    from utils.deploy import export_gguf, export_onnx

    (tmp_path / "student_meta.json").write_text(json.dumps({"family": "seq2seq", "mode": "dss", "task": "arith"}))
    with pytest.raises(ValueError, match="causal students"):
        export_gguf(tmp_path)
    with pytest.raises(ValueError, match="causal students"):
        export_onnx(tmp_path)


@pytest.mark.slow
def test_gguf_round_trip_through_transformers_and_llama_cpp(run):
    from utils.deploy import compare_gguf, export_gguf, write_modelfile

    path = export_gguf(run["out"])
    assert path.parent.name == "gguf" and path.stat().st_size > 1e6
    modelfile, _ = write_modelfile(run["out"], path)
    assert modelfile.parent == path.parent and "FROM ./student.gguf" in modelfile.read_text()
    result = compare_gguf(run["out"], path, list(run["test"]["input"][:3]))
    assert result["tokens_match"], "llama.cpp tokenizes the prompts differently from the student's tokenizer"
    assert result["agreement_transformers_gguf"] == 1.0, result
    assert result["same_next_token"] and result["logits_max_abs_diff"] < 0.1, result
    assert result["agreement_llama_cpp"] >= 2 / 3, result

    from llama_cpp import Llama

    half = export_gguf(run["out"], run["out"] / "gguf-f16", dtype="f16")
    assert 0.4 < half.stat().st_size / path.stat().st_size < 0.6
    llm = Llama(model_path=str(half), n_ctx=128, n_threads=1, n_threads_batch=1, verbose=False)
    prompt = format_prompt(None, LABEL_PREFIX + run["test"]["input"][0], "causal")
    assert llm.create_completion(prompt, max_tokens=4, temperature=0.0)["usage"]["completion_tokens"] >= 1
    llm.close()


# --- ONNX and the demo -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_export_matches_pytorch(run):
    from utils.deploy import OnnxPredictor, compare_onnx, export_onnx

    onnx_dir = export_onnx(run["out"])
    assert (onnx_dir / "model.onnx").exists() and (onnx_dir / "student_meta.json").exists()
    inputs = list(run["test"]["input"][:3])
    result = compare_onnx(run["out"], onnx_dir, inputs, repeats=1)
    assert result["logits_max_abs_diff"] < 1e-3, result
    assert result["agreement"] == 1.0, result
    assert result["onnx_ms_per_example_batch1"] > 0 and result["pytorch_ms_per_example_batch1"] > 0
    explained = OnnxPredictor.from_pretrained(onnx_dir).predict(inputs[:1], rationale=True)
    assert explained[0]["label"] == result["pytorch"][0] and isinstance(explained[0]["rationale"], str)


@pytest.mark.slow
def test_gradio_demo_builds_without_launching_and_answers(predictor, run):
    import gradio as gr

    from utils.deploy import gradio_demo

    demo = gradio_demo(predictor, examples=list(run["test"]["input"][:2]))
    assert isinstance(demo, gr.Interface)
    text = run["test"]["input"][0]
    label, rationale = demo.fn(text, True)
    expected = predictor.predict([text], rationale=True)[0]
    assert (label, rationale) == (expected["label"], expected["rationale"])
    assert demo.fn("   ", False)[0] == "(type a problem)"
