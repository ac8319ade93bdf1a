"""Plugin discovery: drop-in files, the ``edged.plugins`` entry points, built-in plugins.

A plugin is a module; its tools are the functions marked with ``@tool``, named
``<plugin>.<function>``. Built-in plugins live in ``edged.tools.builtin`` and load exactly like
third-party ones. A plugin that fails to import, or whose tool has a bad signature, is
reported (log + ``errors``) and skipped; the rest load. ``load()`` builds a fresh registry, so
a reload (SIGHUP) swaps the whole set at once.

Each import runs in a daemon thread under ``import_timeout_s``: a plugin that hangs at import
(a blocking call at module level) is reported and skipped instead of blocking start or reload.
A thread cannot be killed, so it is abandoned; while it still runs, that plugin is not
imported again (unless its file changed) rather than piling up threads. Drop-in files are run
with ``exec_module``, which holds no import lock, so a hung one blocks no other import.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any

from .base import TOOL_ATTR, Tool, make_tool

log = logging.getLogger("edged.tools")

ENTRY_POINT_GROUP = "edged.plugins"


@dataclass
class PluginError:
    plugin: str
    source: str
    error: str


@dataclass
class Registry:
    tools: dict[str, Tool] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)
    plugins: dict[str, str] = field(default_factory=dict)  # name -> source

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def matching(self, patterns: list[str] | None) -> list[Tool]:
        """Tools whose names match any pattern (``home.*``); None means all."""
        if patterns is None:
            return list(self.tools.values())
        return [t for n, t in self.tools.items() if any(fnmatchcase(n, p) for p in patterns)]

    def add_module(self, plugin: str, module: ModuleType, source: str) -> None:
        found = 0
        for attr in vars(module).values():
            options = getattr(attr, TOOL_ATTR, None)
            if options is None or not callable(attr):
                continue
            if getattr(attr, "__module__", None) != module.__name__:
                continue  # imported from elsewhere: registered by its own plugin
            opts = dict(options)
            short = opts.pop("name", None) or attr.__name__
            try:
                t = make_tool(attr, name=f"{plugin}.{short}", plugin=plugin, **opts)
            except (TypeError, ValueError, NameError) as e:
                self._error(plugin, source, f"tool {short}: {e}")
                continue
            if t.name in self.tools:
                self._error(plugin, source, f"tool {t.name} is already defined by "
                                            f"{self.tools[t.name].plugin}; skipped")
                continue
            self.tools[t.name] = t
            found += 1
        self.plugins[plugin] = source
        log.debug("plugin %s (%s): %d tool(s)", plugin, source, found)

    def _error(self, plugin: str, source: str, error: str) -> None:
        self.errors.append(PluginError(plugin, source, error))
        log.error("plugin %s (%s) skipped: %s", plugin, source, error)


def load(dirs: list[str] | None = None, *, builtin: bool = True, entry_points: bool = True,
         disabled: set[str] | None = None, import_timeout_s: float = 10.0) -> Registry:
    reg = Registry()
    disabled = disabled or set()
    if builtin:
        from . import builtin as pkg

        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name not in disabled:
                _import(reg, info.name, f"builtin:{info.name}",
                        lambda n=info.name: importlib.import_module(f"{pkg.__name__}.{n}"),
                        import_timeout_s)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in disabled:
                _import(reg, ep.name, f"entry point {ep.value}", ep.load, import_timeout_s)
    for d in dirs or []:
        folder = Path(d).expanduser()
        if not folder.is_dir():
            log.warning("plugin folder %s does not exist; skipped", folder)
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_") or path.stem in disabled:
                continue
            _import(reg, path.stem, str(path), lambda p=path: _load_file(p), import_timeout_s,
                    _signature(path))
    return reg


@dataclass
class _Hung:
    thread: threading.Thread
    signature: Any  # the file's (mtime, size) when the import started
    since: float


_hung: dict[str, _Hung] = {}  # source -> its abandoned import, while that thread lives
_hung_lock = threading.Lock()


def hung_imports() -> list[str]:
    """Plugin imports that timed out and are still running (abandoned threads)."""
    now = time.monotonic()
    with _hung_lock:
        return [f"{src} (hung for {now - h.since:.0f} s)" for src, h in _hung.items()
                if h.thread.is_alive()]


def _import(reg: Registry, plugin: str, source: str, loader: Any, timeout_s: float,
            signature: Any = None) -> None:
    if plugin in reg.plugins:
        reg._error(plugin, source, f"a plugin named {plugin!r} is already loaded from "
                                   f"{reg.plugins[plugin]}")
        return
    with _hung_lock:
        hung = _hung.get(source)
        if hung is not None and not hung.thread.is_alive():
            del _hung[source]
        elif hung is not None and hung.signature == signature:
            reg._error(plugin, source, f"not imported: its import started "
                                       f"{time.monotonic() - hung.since:.0f} s ago still hangs "
                                       f"(change the file or restart edged)")
            return
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["module"] = loader()
        except BaseException as e:  # noqa: BLE001 - a plugin must never take the daemon down
            box["error"] = e

    thread = threading.Thread(target=run, name=f"edged-import-{plugin}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        with _hung_lock:
            _hung[source] = _Hung(thread, signature, time.monotonic() - timeout_s)
        reg._error(plugin, source, f"import did not finish within {timeout_s:g} s "
                                   f"(plugins.import_timeout_s); abandoned")
        return
    if "error" in box:
        e = box["error"]
        tb = traceback.extract_tb(e.__traceback__)
        where = f" ({tb[-1].filename}:{tb[-1].lineno})" if tb else ""
        reg._error(plugin, source, f"import failed: {type(e).__name__}: {e}{where}")
        return
    module = box.get("module")
    if not isinstance(module, ModuleType):
        reg._error(plugin, source, "entry point must name a module")
        return
    reg.add_module(plugin, module, source)


def _signature(path: Path) -> Any:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _load_file(path: Path) -> ModuleType:
    """Import a drop-in file under a private module name (re-imported fresh on reload)."""
    name = f"edged_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(name) is module:  # a newer import may own the name by now
            del sys.modules[name]
        raise
    return module
