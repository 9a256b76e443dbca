"""Speech engines: one seam (`narro.engines.base`), one table (`ENGINES`), found through entry points.

Every engine, narro's own included, is an `EngineKind` subclass registered under the
`narro.engines` entry point group; `ENGINES` maps `engine:` names in voices.yaml to those
classes. The table is discovered on first use, not at import, so an engine module may import
`narro.engines` at its top. A plugin that fails to import (or is not an `EngineKind`) is kept
aside with its error in `ENGINES.broken`: `engine_kind` raises EngineUnavailable for it, and
only the courses whose voices use it stop.

`engine_for` loads an engine voice once per process (a model load is slow) and reuses it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from narro.engines.base import Engine, EngineKind, NoOptions, StreamingEngine, Synthesis, Variant, WordTiming
from narro.errors import EngineUnavailable

if TYPE_CHECKING:
    from narro.voices import EngineVoice

__all__ = [
    "ENGINES", "Engine", "EngineKind", "NoOptions", "StreamingEngine", "Synthesis", "Variant", "WordTiming",
    "engine_for", "engine_kind", "rate_slot", "set_rate_gate",
]

ENTRY_POINT_GROUP = "narro.engines"


class EngineTable(MutableMapping[str, type[EngineKind]]):
    """Engine classes by name, read from the entry point group the first time the table is used.

    Plugins that cannot be used are left out and listed in `broken` (name -> why). Setting an
    item registers an engine in this process only (tests, an application embedding narro).
    """

    def __init__(self, group: str):
        self._group = group
        self._kinds: dict[str, type[EngineKind]] | None = None
        self._broken: dict[str, str] = {}
        self._lock = threading.RLock()
        self._discovering = False

    def _table(self) -> dict[str, type[EngineKind]]:
        if self._kinds is None:
            with self._lock:
                if self._kinds is None:
                    if self._discovering:  # a plugin asked for the table while being imported by it
                        raise RuntimeError("the engine table was used while engine plugins were being imported; "
                                           "use it inside functions, not at a module's top")
                    self._discovering = True
                    try:
                        self._kinds, self._broken = self._discover()
                    finally:
                        self._discovering = False
        return self._kinds

    def _discover(self) -> tuple[dict[str, type[EngineKind]], dict[str, str]]:
        kinds, broken = {}, {}
        for point in importlib.metadata.entry_points(group=self._group):
            try:
                kinds[point.name] = _checked(point.name, point.load())
            except Exception as error:  # noqa: BLE001 (a plugin may fail any way; report it, go on)
                broken[point.name] = f"plugin {point.value}: {type(error).__name__}: {error}"
        return kinds, broken

    @property
    def broken(self) -> dict[str, str]:
        """Plugins that failed to load, by engine name, with the error."""
        self._table()
        return dict(self._broken)

    def __getitem__(self, name: str) -> type[EngineKind]:
        return self._table()[name]

    def __setitem__(self, name: str, kind: type[EngineKind]) -> None:
        self._table()[name] = _checked(name, kind)

    def __delitem__(self, name: str) -> None:
        del self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def _checked(name: str, kind: object) -> type[EngineKind]:
    if not (isinstance(kind, type) and issubclass(kind, EngineKind)):
        raise TypeError(f"{kind!r} is not a narro.engines.EngineKind subclass")
    if getattr(kind, "name", None) != name:
        raise TypeError(f"{kind.__name__}.name is {getattr(kind, 'name', None)!r}, but it is registered as '{name}'")
    return kind


ENGINES = EngineTable(ENTRY_POINT_GROUP)

_loaded: dict[tuple[EngineVoice, Any], Engine] = {}
# Re-entrant: an engine may wrap another and load it from inside its own load.
_loading = threading.RLock()


def engine_kind(name: str) -> type[EngineKind]:
    """The engine class registered as `name`; EngineUnavailable when there is none or its plugin is broken."""
    kind = ENGINES.get(name)
    if kind is not None:
        return kind
    if name in ENGINES.broken:
        raise EngineUnavailable(f"engine '{name}' cannot be used: {ENGINES.broken[name]}")
    known = ", ".join(sorted(ENGINES)) or "none (is narro installed? pip install -e .)"
    raise EngineUnavailable(f"unknown engine '{name}'; known: {known}")


def engine_for(voice: EngineVoice, settings: Any) -> Engine:
    """The loaded engine for a voice and the run's settings; loaded on first use in this process, then reused.

    Voices that differ in any option (pydantic extras included) are different keys.
    """
    key = (voice, settings)
    engine = _loaded.get(key)
    if engine is None:
        with _loading:
            engine = _loaded.get(key)
            if engine is None:
                engine = engine_kind(voice.engine).load(voice, settings)
                _loaded[key] = engine
    return engine


def _no_gate(limit: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


_gate: Callable[[str], AbstractContextManager[object]] = _no_gate


def set_rate_gate(factory: Callable[[str], AbstractContextManager[object]] | None) -> None:
    """Run every rate-limited request inside `factory(limit_name)` (None: no gate); tasks/ installs Prefect's."""
    global _gate
    _gate = factory or _no_gate


def rate_slot(limit: str) -> AbstractContextManager[object]:
    """One slot of the cross-worker limit `limit` (an EngineKind's `rate_limit`), held for one request."""
    return _gate(limit)
