"""Resumable progress: where runners keep finished cells so that a re-run (or a resumed killed run) skips them.

A store maps a key (e.g. 'sweep__lr7__pgd-linf') to a JSON-serialisable dict. Runners only call `load`/`save`,
and `slot(key)` for an attack that keeps its own resumable state (official AutoAttack): a `StateSlot` holds one
JSON document plus numbered tensor shards, so the attack saves and restores its state without ever seeing a path
(attacks and runners do no file I/O; only this package knows files). `MemoryStore` keeps progress in memory
(library use, tests), `FileStore` in a folder of JSON files written atomically (the CLI's run directories,
`<out>/state/`), with a slot's shards in `<key>.adv/shard-NNNNN.safetensors` next to its `<key>.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..utils import atomic_write, write_json_atomic

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)


class StateSlot(Protocol):
    """One resumable state of an attack: a JSON document and numbered tensor shards (written before the document
    that counts them, so a kill between the two leaves a readable state). `where` names it in messages."""

    where: str

    def read(self) -> dict[str, Any] | None: ...

    def write(self, obj: dict[str, Any]) -> None: ...

    def write_shard(self, k: int, tensors: dict[str, Tensor]) -> None: ...

    def read_shard(self, k: int) -> dict[str, Tensor]: ...


class Store(Protocol):
    """Where resumable progress lives."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, obj: dict[str, Any]) -> None: ...

    def slot(self, key: str) -> StateSlot: ...


class MemorySlot:
    """A StateSlot in memory (copies in and out, like a file would)."""

    def __init__(self, key: str) -> None:
        self.where = f"in-memory state {key!r}"
        self.doc: dict[str, Any] | None = None
        self.shards: dict[int, dict[str, Tensor]] = {}

    def read(self) -> dict[str, Any] | None:
        return None if self.doc is None else json.loads(json.dumps(self.doc))

    def write(self, obj: dict[str, Any]) -> None:
        self.doc = json.loads(json.dumps(obj))

    def write_shard(self, k: int, tensors: dict[str, Tensor]) -> None:
        self.shards[k] = {name: t.detach().cpu().clone() for name, t in tensors.items()}

    def read_shard(self, k: int) -> dict[str, Tensor]:
        return {name: t.clone() for name, t in self.shards[k].items()}


class FileSlot:
    """A StateSlot as `<path>` (JSON) and `<path>.adv/shard-NNNNN.safetensors`, each written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def _shard(self, k: int) -> Path:
        return Path(str(self.path) + ".adv") / f"shard-{k:05d}.safetensors"

    def read(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            log.warning("ignoring unreadable attack state %s (the attack starts again)", self.path)
            return None

    def write(self, obj: dict[str, Any]) -> None:
        write_json_atomic(self.path, obj)

    def write_shard(self, k: int, tensors: dict[str, Tensor]) -> None:
        from safetensors.torch import save

        blob = save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})
        atomic_write(self._shard(k), lambda fh: fh.write(blob), mode="wb")

    def read_shard(self, k: int) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self._shard(k)))


class MemoryStore:
    """Progress in memory (lost when the process ends)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.slots: dict[str, MemorySlot] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def save(self, key: str, obj: dict[str, Any]) -> None:
        self.data[key] = json.loads(json.dumps(obj))

    def slot(self, key: str) -> MemorySlot:
        return self.slots.setdefault(key, MemorySlot(key))


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

    def slot(self, key: str) -> FileSlot:
        """The state of an attack, in this store's folder (nothing is written until the attack saves)."""
        return FileSlot(self._path(key))


__all__ = ["FileSlot", "FileStore", "MemorySlot", "MemoryStore", "StateSlot", "Store"]
