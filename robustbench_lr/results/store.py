"""Resumable progress: where runners keep finished cells so that a re-run (or a resumed killed run) skips them.

A store maps a key (e.g. 'sweep__lr7__pgd-linf') to a JSON-serialisable dict. Runners only call `load`/`save`
(and `path_for` when a library keeps its own state file, e.g. AutoAttack's `state_path`); `MemoryStore` keeps
progress in memory (library use, tests), `FileStore` in a folder of JSON files written atomically (the CLI's
run directories, `<out>/state/`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from ..utils import write_json_atomic

log = logging.getLogger(__name__)


class Store(Protocol):
    """Where resumable progress lives."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, obj: dict[str, Any]) -> None: ...

    def path_for(self, key: str, suffix: str) -> Path | None: ...


class MemoryStore:
    """Progress in memory (lost when the process ends)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def save(self, key: str, obj: dict[str, Any]) -> None:
        self.data[key] = json.loads(json.dumps(obj))

    def path_for(self, key: str, suffix: str) -> Path | None:
        return None


class FileStore:
    """Progress as JSON files in a directory (atomic writes; unreadable files are ignored and redone)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str, suffix: str = ".json") -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.#" else "_" for c in key)
        return self.root / f"{safe}{suffix}"

    def load(self, key: str) -> dict[str, Any] | None:
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            log.warning("ignoring unreadable progress file %s", p)
            return None

    def save(self, key: str, obj: dict[str, Any]) -> None:
        write_json_atomic(self._path(key), obj)

    def path_for(self, key: str, suffix: str) -> Path | None:
        """A file path inside the store for state that another library writes itself."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self._path(key, suffix)


__all__ = ["FileStore", "MemoryStore", "Store"]
