"""The student as an HTTP service (FastAPI + uvicorn), a small load tester for it, and a Gradio demo.

``python -m utils serve runs/latest/export/<name> --port 8000`` serves:

- ``POST /predict``: ``{"inputs": "one problem" | ["a", "list"], "rationale": false}`` ->
  ``{"model": ..., "predictions": [{"label": ..., "rationale": ...}]}``
- ``GET /healthz``, ``GET /metadata`` (model, task, metrics, limits), ``GET /docs`` (OpenAPI page).

Bad requests get a 4xx with a message and never reach the model: malformed JSON 400, a body over
``max_body_bytes`` 413, everything pydantic rejects (wrong types, unknown fields, an empty or
whitespace-only input, an empty list, more than ``max_inputs`` inputs, an input longer than
``max_chars``) 422, a rationale asked of a student not trained to write one (any mode but ``dss``)
422 as well, and 503 with ``Retry-After`` when ``max_queue`` requests already wait.

Memory stays flat under load: one worker runs the model, one batch at a time; requests that
arrive while it is busy wait in a bounded queue and are answered together in the next batch (at
most ``max_batch`` inputs), which also raises throughput.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at runtime,
# and the request model is built inside create_app (its limits are arguments).
import asyncio
import json
import logging
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from utils.export import EXAMPLE_INPUT, Predictor, rationale_refusal

log = logging.getLogger("utils.serve")

MAX_INPUTS = 32  # inputs per request
MAX_CHARS = 2000  # characters per input (the arith problems have about 100)
MAX_BODY_BYTES = 256 * 1024  # a request body larger than this is refused before it is parsed
MAX_BATCH = 16  # inputs per model call (the evaluation's batch size)
MAX_QUEUE = 64  # requests waiting for the model before new ones get 503


class _BodyLimit:
    """ASGI middleware: reads a request body up to ``limit`` bytes and answers 413 past it, so an
    oversized body is neither buffered whole nor parsed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks, size = [], 0
        while not too_big:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_big = size > self.limit
            if not message.get("more_body", False):
                break
        if too_big:
            body = json.dumps({"detail": f"Request body larger than {self.limit} bytes."}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _Batcher:
    """One model worker fed by a bounded queue: requests waiting while it works form the next batch
    (up to ``max_batch`` inputs; a single larger request runs alone)."""

    def __init__(self, predictor, max_batch: int, max_queue: int):
        self.predictor, self.max_batch, self.max_queue = predictor, max_batch, max_queue
        self.queue: asyncio.Queue | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.largest_batch = 0

    def start(self):
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, inputs: list[str], rationale: bool) -> list[dict]:
        from fastapi import HTTPException

        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((inputs, rationale, future))
        except asyncio.QueueFull:
            raise HTTPException(503, f"Busy: {self.max_queue} requests are already waiting; retry shortly.",
                                headers={"Retry-After": "1"}) from None
        return await future

    async def _work(self):
        carry = None
        while True:
            first = carry or await self.queue.get()
            carry = None
            batch, size = [first], len(first[0])
            while size < self.max_batch and not self.queue.empty():
                item = self.queue.get_nowait()
                if size + len(item[0]) > self.max_batch:
                    carry = item  # first in the next batch
                    break
                batch.append(item)
                size += len(item[0])
            await self._run(batch)

    async def _run(self, batch: list):
        loop = asyncio.get_running_loop()
        for rationale in (False, True):  # one model call per kind of answer
            group = [item for item in batch if item[1] == rationale and not item[2].done()]
            if not group:
                continue
            texts = [text for item in group for text in item[0]]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(texts))
            try:
                results = await loop.run_in_executor(
                    self.executor, lambda t=texts, r=rationale: self.predictor.predict(t, rationale=r))
            except Exception as exc:  # the model failed: every waiting request hears it, the worker lives on
                log.exception("prediction failed")
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for inputs, _, future in group:
                if not future.done():  # a client that gave up has a cancelled future
                    future.set_result(results[start : start + len(inputs)])
                start += len(inputs)


def create_app(predictor_or_dir, max_inputs: int = MAX_INPUTS, max_chars: int = MAX_CHARS,
               max_body_bytes: int = MAX_BODY_BYTES, max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE):
    """The FastAPI app serving a ``Predictor`` (or the export folder to load one from)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

    predictor = predictor_or_dir
    if isinstance(predictor_or_dir, (str, Path)):
        predictor = Predictor.from_pretrained(predictor_or_dir)
    info = predictor.describe()
    limits = {"max_inputs": max_inputs, "max_chars": max_chars, "max_body_bytes": max_body_bytes,
              "max_batch": max_batch, "max_queue": max_queue}

    class PredictRequest(BaseModel):
        """One input or a list of inputs; ``rationale`` asks for the rationale too."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"inputs": "Tom has 5 apples and buys 3 more. How many apples does he have?", "rationale": True}]})
        inputs: StrictStr | list[StrictStr] = Field(
            description=f"a problem, or a list of 1 to {max_inputs} problems, each 1 to {max_chars} characters")
        rationale: StrictBool = Field(False, description="also return the student's rationale (slower)")

        @field_validator("inputs")
        @classmethod
        def within_limits(cls, value):
            items = [value] if isinstance(value, str) else value
            if not items:
                raise ValueError("the list of inputs is empty: send at least one problem")
            if len(items) > max_inputs:
                raise ValueError(f"{len(items)} inputs in one request; at most {max_inputs}")
            for i, text in enumerate(items):
                where = "the input" if isinstance(value, str) else f"input {i}"
                if not text.strip():
                    raise ValueError(f"{where} is empty (or only whitespace)")
                if len(text) > max_chars:
                    raise ValueError(f"{where} has {len(text)} characters; at most {max_chars}")
            return value

    class Prediction(BaseModel):
        label: str
        rationale: str | None = None

    class PredictResponse(BaseModel):
        model: str
        predictions: list[Prediction]

    batcher = _Batcher(predictor, max_batch=max_batch, max_queue=max_queue)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"Distilled student: {info['name']}", version="1.0",
                  description=f"A `{info['mode']}` student for task `{info['task']}` (distilling step-by-step "
                              "course). POST /predict answers; GET /metadata describes the model.",
                  lifespan=lifespan)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        invalid_json = [e for e in errors if e.get("type") == "json_invalid"]
        if invalid_json:
            error = invalid_json[0]
            loc = [p for p in error.get("loc", ()) if isinstance(p, int)]
            where = f" at character {loc[0]}" if loc else ""
            reason = error.get("ctx", {}).get("error", "not valid JSON")
            return JSONResponse({"detail": f"Malformed JSON body: {reason}{where}."}, status_code=400)
        # the offending value is not echoed back: it may be megabytes of text
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
        return JSONResponse({"detail": detail}, status_code=422)

    error_responses = {400: {"description": "malformed JSON"}, 413: {"description": "request body too large"},
                       422: {"description": "invalid request (types, empty input, too many or too long inputs, "
                                            "or a rationale from a student not trained to write one)"},
                       503: {"description": "too many requests waiting; retry after the Retry-After seconds"}}

    @app.post("/predict", response_model=PredictResponse, responses=error_responses)
    async def predict(request: PredictRequest) -> PredictResponse:
        """The label of each input, and its rationale when ``rationale`` is true (greedy decoding)."""
        inputs = [request.inputs] if isinstance(request.inputs, str) else request.inputs
        if request.rationale and not predictor.can_explain:
            # refused before the queue: the model would refuse it anyway, and the worker stays free
            raise HTTPException(422, rationale_refusal(predictor.meta))
        results = await batcher.submit(inputs, request.rationale)
        return PredictResponse(model=info["name"], predictions=[Prediction(**r) for r in results])

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the worker runs and how many requests wait."""
        alive = batcher.task is not None and not batcher.task.done()
        return {"status": "ok" if alive else "down", "waiting": batcher.queue.qsize() if batcher.queue else 0,
                "batches": batcher.batches, "largest_batch": batcher.largest_batch}

    @app.get("/metadata")
    async def metadata() -> dict:
        """The model, its task and prompt format, its metrics from notebook 04, and the limits."""
        return {**info, "limits": limits}

    return app


def serve(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, threads: int | None = None,
          **limits) -> None:
    """Run the service in the foreground (Ctrl-C stops it). ``threads``: torch's intra-op threads
    (default: torch's choice); on a machine shared with other work, fewer threads than cores avoid
    the threads waiting on each other, which slows batched generation most."""
    import torch
    import uvicorn

    if threads:
        torch.set_num_threads(threads)
    app = create_app(out_dir, **limits)
    uvicorn.run(app, host=host, port=port, log_level="info")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """The service in a thread of this process (notebooks, tests): ``with BackgroundServer(app) as url:``,
    or ``url = server.start()`` ... ``server.stop()``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self) -> str:
        """Start serving; returns the base URL once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The service did not start on {self.url} (port taken?).")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        """Stop serving (requests in flight finish first) and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=30)


# --- load testing --------------------------------------------------------------------------------


def latency_summary(seconds: list[float], wall: float, errors: int, items: int, peak_mb: float | None) -> dict:
    """Throughput, latency percentiles (ms) and errors of one load test."""
    from utils.costs import percentile

    done = len(seconds)
    return {"requests": done + errors, "errors": errors, "inputs": items, "wall_s": wall,
            "requests_per_s": done / wall if wall else 0.0, "inputs_per_s": items / wall if wall else 0.0,
            "p50_ms": 1000 * percentile(seconds, 0.50), "p95_ms": 1000 * percentile(seconds, 0.95),
            "p99_ms": 1000 * percentile(seconds, 0.99), "mean_ms": 1000 * statistics.fmean(seconds) if seconds else 0.0,
            "peak_memory_mb": peak_mb}


def load_test(url: str, payloads: list[dict], concurrency: int = 8, timeout: float = 300.0,
              server_pid: int | None = None) -> dict:
    """Send every payload to ``url/predict`` once, ``concurrency`` at a time (client threads), and
    summarise: a bounded number of requests, so it always ends. ``server_pid``: sample that
    process's memory. Threads, not asyncio, so it also runs inside Jupyter's event loop."""
    import httpx

    from utils.costs import PeakRSS

    seconds, errors, items = [], 0, 0
    counter = threading.Lock()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    def one(payload):
        nonlocal errors, items
        start = time.perf_counter()
        try:
            response = client.post("/predict", json=payload)
            answered = len(response.json()["predictions"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError):
            answered = None
        elapsed = time.perf_counter() - start
        with counter:
            if answered is None:
                errors += 1
            else:
                seconds.append(elapsed)
                items += answered

    memory = PeakRSS(server_pid) if server_pid is not None else None
    with httpx.Client(base_url=url, timeout=timeout, limits=limits) as client, \
            ThreadPoolExecutor(max_workers=concurrency) as pool:
        if memory:
            memory.__enter__()
        start = time.perf_counter()
        list(pool.map(one, payloads))
        wall = time.perf_counter() - start
        if memory:
            memory.__exit__(None, None, None)
    return latency_summary(seconds, wall, errors, items, memory.peak_mb if memory else None)


def load_test_in_process(call, payloads: list, concurrency: int = 8) -> dict:
    """The same measurement for a model called in this process: ``concurrency`` client threads,
    one model call at a time (a lock), ``call(payload)`` returning the number of items answered."""
    from utils.costs import PeakRSS

    lock = threading.Lock()
    seconds, errors, items = [], 0, 0
    counter = threading.Lock()

    def one(payload):
        nonlocal errors, items
        start = time.perf_counter()
        try:
            with lock:
                n = call(payload)
        except Exception:
            with counter:
                errors += 1
            return
        with counter:
            seconds.append(time.perf_counter() - start)
            items += n

    with PeakRSS() as memory, ThreadPoolExecutor(max_workers=concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(one, payloads))
        wall = time.perf_counter() - start
    return latency_summary(seconds, wall, errors, items, memory.peak_mb)


def load_table(rows: dict[str, dict]) -> str:
    """A Markdown table of load-test summaries, one row per setting."""
    lines = ["| setting | requests | errors | inputs/s | requests/s | p50 (ms) | p95 (ms) | p99 (ms) | peak memory (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        memory = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") else "n/a"
        lines.append(f"| {name} | {r['requests']} | {r['errors']} | {r['inputs_per_s']:.2f} | {r['requests_per_s']:.2f} "
                     f"| {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {memory} |")
    return "\n".join(lines)


# --- a demo for people ---------------------------------------------------------------------------


def gradio_demo(predictor, examples: list[str] | None = None):
    """A Gradio interface around ``predictor`` (a ``Predictor`` or ``OnnxPredictor``): a problem in,
    the label out, and for a student trained to write rationales (``predictor.can_explain``) a
    "show the rationale" box and the rationale. ``demo.launch(share=True)`` opens it from Colab."""
    import gradio as gr

    meta = predictor.meta
    description = (f"A {meta['family']} student trained in mode `{meta['mode']}` on task `{meta['task']}` "
                   "(distilling step-by-step course). It answers in its training format; check its answers.")
    examples = examples or [EXAMPLE_INPUT]
    problem = gr.Textbox(label="problem", lines=3)
    if not predictor.can_explain:  # no rationale option: this student never learned to write one

        def answer_label(text: str) -> str:
            if not text or not text.strip():
                return "(type a problem)"
            return predictor.predict([text])[0]["label"]

        return gr.Interface(fn=answer_label, inputs=[problem], outputs=[gr.Textbox(label="answer")],
                            examples=[[x] for x in examples], title="Distilled student",
                            description=description + " It was trained without rationales.",
                            flagging_mode="never", cache_examples=False)

    def answer(text: str, with_rationale: bool):
        if not text or not text.strip():
            return "(type a problem)", ""
        result = predictor.predict([text], rationale=with_rationale)[0]
        return result["label"], result.get("rationale", "")

    return gr.Interface(
        fn=answer,
        inputs=[problem, gr.Checkbox(label="show the rationale", value=True)],
        outputs=[gr.Textbox(label="answer"), gr.Textbox(label="rationale")],
        examples=[[x, True] for x in examples],
        title="Distilled student",
        description=description,
        flagging_mode="never",
        cache_examples=False,
    )
