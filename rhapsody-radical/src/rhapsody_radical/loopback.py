"""Keep a local pilot's network endpoints on the loopback interface.

radical.utils 1.x binds every ZMQ endpoint on all interfaces (``tcp://*:<port>``) and only
*advertises* the interface `RADICAL_DEFAULT_IFACE` names: a pilot on a laptop or a login node
listens on the network for as long as it runs (about 40 ports across the client, its bridges,
the agent and raptor). For a local pilot the backend calls `confine()`, which advertises the
loopback interface and makes radical.utils bind each endpoint on the address it advertises:
in this process at once, and in every Python process the pilot starts from this environment
(bridges, agent, raptor master and workers) through ``rhapsody_radical_loopback.pth``, which
calls `install()` at interpreter start-up when they inherit `ENV`. The same hook makes their
radical.utils publishers thread-safe (`rhapsody_radical.publisher_lock`), which the client
does for itself.

This module imports nothing but the standard library at load: the ``.pth`` hook runs it in
every interpreter of this environment that inherits `ENV`, Python tasks included.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: set to "1" in the environment of a local pilot's processes: they bind on loopback only
ENV = "RHAPSODY_RADICAL_LOOPBACK"
_IFACE = "RADICAL_DEFAULT_IFACE"
_ANY = "tcp://*:"
_UTILS = "radical.utils.zmq.utils"
_SERVER = "radical.utils.zmq.server"
_PUBSUB = "radical.utils.zmq.pubsub"
_PATCHED = (_UTILS, _SERVER, _PUBSUB)


_lock = threading.Lock()
_confined = 0  # local pilots running: the settings are given back when the last one ends
_saved: dict[str, Any] = {}


def confine() -> Callable[[], None]:
    """Advertise and bind every RADICAL-Pilot endpoint of this process, and of the processes it
    starts from now on, on the loopback interface; return the function that gives the
    environment back once no confined pilot is left (the patch stays: it only follows what is
    advertised)."""
    global _confined
    with _lock:
        if _confined == 0:
            config = _default_config()
            _saved.update(
                {name: os.environ.get(name) for name in (ENV, _IFACE)}, iface=config.get("iface")
            )
            os.environ[ENV] = "1"
            os.environ[_IFACE] = "lo"
            install()
            # radical.utils reads RADICAL_DEFAULT_IFACE once per process, often before this
            config["iface"] = ["lo"]
        _confined += 1
    released = False

    def release() -> None:
        global _confined
        nonlocal released
        with _lock:
            if released:
                return
            released = True
            _confined -= 1
            if _confined == 0:
                _default_config()["iface"] = _saved.pop("iface")
                for name, value in _saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
                _saved.clear()

    return release


def install() -> None:
    """Make radical.utils bind on the address it advertises instead of on every interface, and
    its publishers thread-safe: now for its modules already imported, at import for the
    others."""
    for name in _PATCHED:
        module = sys.modules.get(name)
        if module is not None:
            _patch(module)
    if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def _default_config() -> Any:
    import radical.utils as ru  # type: ignore[import-untyped]

    return ru.DefaultConfig()


def _advertised(url: str) -> str:
    """`url` bound on the advertised address when it names every interface."""
    if not url.startswith(_ANY):
        return url
    from radical.utils.host import get_hostip  # type: ignore[import-untyped]

    return f"tcp://{get_hostip()}:{url[len(_ANY) :]}"


class _AdvertisedBind:
    """A ZMQ socket whose `bind` goes to the advertised address, not to every interface."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def bind(self, url: str) -> Any:
        return self._sock.bind(_advertised(url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _patch(module: types.ModuleType) -> None:
    if getattr(module, "_rhapsody_loopback", False):
        return
    if module.__name__ == _PUBSUB:  # no endpoint: publisher_lock warns if it has changed
        from rhapsody_radical import publisher_lock

        publisher_lock.lock(module)
    elif module.__name__ == _UTILS and callable(getattr(module, "zmq_bind", None)):
        original_bind = module.zmq_bind

        def zmq_bind(sock: Any) -> Any:
            return original_bind(_AdvertisedBind(sock))

        module.zmq_bind = zmq_bind  # type: ignore[attr-defined]
        # modules that imported the name before this patch keep the original: rebind theirs
        for name, other in list(sys.modules.items()):
            if name.startswith("radical.") and getattr(other, "zmq_bind", None) is original_bind:
                other.zmq_bind = zmq_bind  # type: ignore[attr-defined]
    elif module.__name__ == _SERVER and hasattr(getattr(module, "Server", None), "_iterate_urls"):
        original_urls = module.Server._iterate_urls

        def _iterate_urls(self: Any) -> Iterator[str]:
            for url in original_urls(self):
                yield _advertised(url)

        module.Server._iterate_urls = _iterate_urls
    else:
        warnings.warn(
            f"rhapsody_radical.loopback: {module.__name__} has changed; its endpoints may "
            "listen beyond loopback",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    module._rhapsody_loopback = True  # type: ignore[attr-defined]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patch the three radical.utils modules right after they execute, before anyone imports
    a name from them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _PATCHED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> Any:  # get_source, is_package, ...
        return getattr(self._loader, name)
