"""Real HTTP servers on 127.0.0.1 for the teacher's network protocols.

- ``OllamaServer``: the Ollama REST API (``GET /api/tags``, ``POST /api/generate``, ``POST /api/chat``,
  streamed as NDJSON or not), answered by the bundled GGUF model through llama-cpp-python, with
  switches that inject faults (an error status, a delay longer than the client's timeout).
- ``FaultServer``: a stdlib server that answers every request with one status (or a delay), for the
  error paths of the OpenAI-compatible protocol.
- ``LlamaCppServer``: llama-cpp-python's real OpenAI-compatible server (``llama_cpp.server``, started
  through ``python -m utils.llamacpp`` so its model keeps plain CPU buffers) as a subprocess.

Each records the requests it saw, so a test can assert what went over the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

# One thread for prompt and generation: on a 2-core machine shared with other work, llama.cpp's
# spinning worker threads slow down by an order of magnitude as soon as the cores are oversubscribed.
N_THREADS = 1


def free_port() -> int:
    """A TCP port nothing listens on right now (also the way to get a closed port for 'server down')."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, records it, applies the owner's faults, then lets the owner answer."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as Ollama speaks
    timeout = 30  # an idle keep-alive connection does not hold its thread forever

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass  # quiet: the tests read ``owner.requests`` instead

    def do_GET(self):
        self._handle(None)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self._handle(self.rfile.read(length) if length else b"")

    def _handle(self, raw: bytes | None):
        owner = self.server.owner
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = raw.decode("utf-8", "replace")
        owner._enter(self.command, self.path, body, {k.lower(): v for k, v in self.headers.items()})
        try:
            if owner._apply_faults(self):
                return
            owner.answer(self, self.command, self.path, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing left to say
        finally:
            owner._leave()

    def send_json(self, status: int, payload, content_type: str = "application/json; charset=utf-8"):
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_ndjson(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_line(self, payload: dict):
        data = (json.dumps(payload) + "\n").encode("utf-8")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_ndjson(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port chosen by the OS) in a background thread.

    Faults: ``inject(status=..., delay=..., times=...)`` makes the next ``times`` requests (all when
    ``None``) wait ``delay`` seconds, then answer ``status`` (or answer normally when ``status`` is None).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()

    def inject(self, status: int | None = None, delay: float = 0.0, times: int | None = None,
               body: dict | str | None = None) -> None:
        """Make requests fail (``status``) and/or stall (``delay`` seconds); ``times`` of them, or all."""
        with self._lock:
            self.fault_status, self.fault_delay, self.fault_times, self.fault_body = status, delay, times, body

    def clear(self) -> None:
        """No faults, an empty request log."""
        with self._lock:
            self.fault_status, self.fault_delay, self.fault_times, self.fault_body = None, 0.0, 0, None
            self.requests.clear()
            self.max_in_flight = 0

    def seen(self, path: str | None = None) -> list[dict]:
        """The requests received so far (to ``path`` only, when given)."""
        with self._lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def _enter(self, method, path, body, headers):
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body, "headers": headers})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self):
        with self._lock:
            self.in_flight -= 1

    def _apply_faults(self, handler: _Handler) -> bool:
        with self._lock:
            active = self.fault_times is None or self.fault_times > 0
            if active and self.fault_times is not None:
                self.fault_times -= 1
            status, delay, body = self.fault_status, self.fault_delay, self.fault_body
        if not active:
            return False
        if delay:
            self._stopping.wait(delay)  # cut short when the server stops
        if status is None:
            return False
        handler.send_json(status, body if body is not None else self.fault_payload(status, handler))
        return True

    def fault_payload(self, status: int, handler: _Handler):
        return {"error": f"injected fault: HTTP {status}"}

    def answer(self, handler: _Handler, method: str, path: str, body) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving and free the port (bounded: sleeping handlers are woken)."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class OllamaServer(_LoopbackServer):
    """The Ollama REST API for one model name, answered by the bundled GGUF through llama-cpp-python.

    The model loads on the first request that needs it, so tests of error paths never load it.
    Any other model name answers 404 ``{"error": "model 'x' not found, try pulling it first"}``.
    """

    def __init__(self, model_name: str = "smollm2:135m", n_ctx: int = 1024):
        self.model_name = model_name
        self.n_ctx = n_ctx
        self._llm = None
        self._model_lock = threading.Lock()  # llama.cpp contexts are not thread-safe
        super().__init__()

    def llm(self):
        """The model (loaded once)."""
        with self._model_lock:
            if self._llm is None:
                from utils.llamacpp import open_gguf
                from utils.models import bundled_gguf_path

                self._llm = open_gguf(bundled_gguf_path(), n_ctx=self.n_ctx, n_threads=N_THREADS,
                                     n_threads_batch=N_THREADS, verbose=False)
            return self._llm

    def answer(self, handler, method, path, body):
        path = path.split("?", 1)[0]
        if method == "GET" and path == "/":
            return handler.send_json(200, "Ollama is running", "text/plain; charset=utf-8")
        if method == "GET" and path == "/api/version":
            return handler.send_json(200, {"version": "0.0.0-loopback"})
        if method == "GET" and path == "/api/tags":
            return handler.send_json(200, {"models": [self._tag()]})
        if method == "POST" and path in ("/api/generate", "/api/chat"):
            if not isinstance(body, dict):
                return handler.send_json(400, {"error": "invalid JSON body"})
            model = body.get("model")
            if not model:
                return handler.send_json(400, {"error": "model is required"})
            if model != self.model_name:
                return handler.send_json(404, {"error": f"model '{model}' not found, try pulling it first"})
            try:
                if path == "/api/generate":
                    return self._generate(handler, body)
                return self._chat(handler, body)
            except ValueError as exc:  # e.g. a prompt longer than the context: Ollama answers 500 too
                return handler.send_json(500, {"error": str(exc)})
        return handler.send_json(404, "404 page not found", "text/plain; charset=utf-8")

    def _tag(self) -> dict:
        from utils.models import bundled_gguf_path

        path = bundled_gguf_path()
        stat = path.stat()
        digest = hashlib.sha256(f"{path.name}:{stat.st_size}".encode()).hexdigest()  # a stand-in, not the blob hash
        return {"name": self.model_name, "model": self.model_name, "size": stat.st_size, "digest": digest,
                "modified_at": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(),
                "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                            "parameter_size": "135M", "quantization_level": "Q4_1"}}

    @staticmethod
    def _sampling(body: dict) -> dict:
        """Ollama's options as llama-cpp-python arguments (Ollama's defaults where one is missing)."""
        options = body.get("options") or {}
        num_predict = options.get("num_predict", 128)
        return {
            # Ollama's -1 means "until the context is full"; llama-cpp-python says that with None.
            "max_tokens": None if num_predict is None or num_predict < 0 else int(num_predict),
            "temperature": float(options.get("temperature", 0.8)),
            "top_p": float(options.get("top_p", 0.9)),
            "top_k": int(options.get("top_k", 40)),
            "repeat_penalty": float(options.get("repeat_penalty", 1.1)),
            "seed": int(options["seed"]) if "seed" in options else None,
            "stop": list(options.get("stop") or []),
        }

    def _generate(self, handler, body):
        prompt = body.get("prompt") or ""
        stream = body.get("stream", True)
        if not prompt:  # Ollama's documented way to load a model: an empty prompt, an empty answer
            return self._reply(handler, stream, {"response": ""}, {"done_reason": "load"})
        llm = self.llm()
        sampling = self._sampling(body)
        if body.get("raw"):
            def run(stream_now):
                return llm.create_completion(prompt, stream=stream_now, **sampling)

            def piece(chunk):
                return chunk["choices"][0].get("text") or ""
        else:  # not raw: Ollama renders the prompt (and system) through the model's chat template
            messages = ([{"role": "system", "content": body["system"]}] if body.get("system") else [])
            messages.append({"role": "user", "content": prompt})

            def run(stream_now):
                return llm.create_chat_completion(messages=messages, stream=stream_now, **sampling)

            def piece(chunk):
                choice = chunk["choices"][0]
                return (choice.get("delta") or choice.get("message") or {}).get("content") or ""
        self._run(handler, stream, run, piece, lambda text: {"response": text})

    def _chat(self, handler, body):
        messages = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                    for m in body.get("messages") or []]
        stream = body.get("stream", True)
        if not messages:  # Ollama loads the model and answers an empty assistant message
            return self._reply(handler, stream, {"message": {"role": "assistant", "content": ""}},
                               {"done_reason": "load"})
        llm = self.llm()
        sampling = self._sampling(body)

        def run(stream_now):
            return llm.create_chat_completion(messages=messages, stream=stream_now, **sampling)

        def piece(chunk):
            choice = chunk["choices"][0]
            return (choice.get("delta") or choice.get("message") or {}).get("content") or ""

        self._run(handler, stream, run, piece, lambda text: {"message": {"role": "assistant", "content": text}})

    def _run(self, handler, stream, run, piece, wrap):
        """Generate under the model lock; answer one JSON object, or NDJSON lines ending in ``done: true``."""
        started = time.perf_counter_ns()
        with self._model_lock:
            if not stream:
                result = run(False)
                text = piece(result)
                usage = result.get("usage") or {}
                final = self._stats(started, result["choices"][0].get("finish_reason"),
                                    usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
                return self._reply(handler, False, wrap(text), final)
            handler.start_ndjson()
            count, reason = 0, None
            for chunk in run(True):
                reason = chunk["choices"][0].get("finish_reason") or reason
                text = piece(chunk)
                if text:
                    count += 1  # llama-cpp-python streams one token per chunk
                    handler.send_line({"model": self.model_name, "created_at": _now(), **wrap(text), "done": False})
            handler.send_line({"model": self.model_name, "created_at": _now(), **wrap(""), "done": True,
                               **self._stats(started, reason, 0, count)})
            handler.end_ndjson()

    @staticmethod
    def _stats(started: int, reason: str | None, prompt_tokens: int, tokens: int) -> dict:
        total = time.perf_counter_ns() - started
        return {"done_reason": reason or "stop", "total_duration": total, "load_duration": 0,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 0,
                "eval_count": tokens, "eval_duration": total}

    def _reply(self, handler, stream, content: dict, final: dict):
        """A finished answer, as one object or as a one-line stream."""
        line = {"model": self.model_name, "created_at": _now(), **content, "done": True, **final}
        if not stream:
            return handler.send_json(200, line)
        handler.start_ndjson()
        handler.send_line(line)
        handler.end_ndjson()


class FaultServer(_LoopbackServer):
    """Answers every request with ``status`` and an OpenAI-style error body, after ``delay`` seconds.

    ``echo_auth=True`` puts the request's bearer token into the error message, as a careless server
    might: the teacher must not pass it on.
    """

    def __init__(self, status: int = 500, delay: float = 0.0, echo_auth: bool = False):
        self.echo_auth = echo_auth
        super().__init__()
        self.inject(status=status, delay=delay)

    def fault_payload(self, status, handler):
        message = f"injected fault: HTTP {status}"
        if self.echo_auth:
            message = f"Incorrect API key provided: {handler.headers.get('Authorization', '')}"
        return {"error": {"message": message, "type": "server_error", "code": status}}

    def answer(self, handler, method, path, body):
        handler.send_json(200, {"object": "list", "data": []})


class LlamaCppServer:
    """``llama_cpp.server`` (through ``python -m utils.llamacpp``) with the bundled GGUF, as a subprocess on a free port.

    ``start()`` waits (bounded) until ``GET /v1/models`` answers; ``stop()`` terminates it, then kills.
    """

    def __init__(self, alias: str = "smollm2", n_ctx: int = 1024, log_dir: str | Path | None = None):
        self.alias = alias
        self.n_ctx = n_ctx
        self.log_path = Path(log_dir or ".") / "llama_cpp_server.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.base_url = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait_s: float = 90.0) -> LlamaCppServer:
        from utils.models import bundled_gguf_path

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        cmd = [sys.executable, "-m", "utils.llamacpp", "--model", str(bundled_gguf_path()),
               "--host", "127.0.0.1", "--port", str(self.port), "--model_alias", self.alias,
               "--n_ctx", str(self.n_ctx), "--n_threads", str(N_THREADS), "--n_threads_batch", str(N_THREADS)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall the server
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=Path(__file__).resolve().parents[1],  # where `utils` imports from
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {wait_s:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """Terminate, wait up to 10 s, then kill; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
