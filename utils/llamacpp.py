"""llama.cpp through llama-cpp-python, with its extra CPU weight buffers (AMX, repacking) switched off.

llama-cpp-python 0.3.36, compiled for the machine it installs on, crashes (SIGSEGV in
``ggml_backend_amx_mul_mat``) on the first decode of the bundled Q4_1 model on CPUs with Intel AMX
(Sapphire Rapids and later). llama.cpp's model parameter ``use_extra_bufts`` (the ``--no-repack``
of its own tools) keeps the weights in plain CPU buffers and the crash away, but ``Llama()`` does
not expose it: ``open_gguf`` sets it while a model loads, and ``python -m utils.llamacpp`` runs
llama-cpp-python's own OpenAI-compatible server with it set. Off on every machine, not only where
AMX is present, so a GGUF file is computed by the same kernels, and answers the same, everywhere.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

_LOCK = threading.Lock()


@contextlib.contextmanager
def extra_buffers_off():
    """While open, every model llama-cpp-python loads in this process keeps plain CPU buffers."""
    import llama_cpp.llama_cpp as lib

    with _LOCK:
        default = lib.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default


def open_gguf(path: str | Path, **kwargs):
    """``llama_cpp.Llama`` for a GGUF file, its weights in plain CPU buffers (see the module's note)."""
    from llama_cpp import Llama

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} not found.")
    with extra_buffers_off():
        return Llama(model_path=str(path), **kwargs)


def serve() -> None:
    """``python -m llama_cpp.server`` (same arguments), its model loaded as ``open_gguf`` loads one."""
    from llama_cpp.server.__main__ import main

    with extra_buffers_off():
        main()


if __name__ == "__main__":
    serve()
