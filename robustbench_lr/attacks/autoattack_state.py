"""The resumable state of an official AutoAttack run (`attacks.autoattack_ref`), kept through a state slot.

Paper: Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020. https://arxiv.org/abs/2003.01690

Status: our own bookkeeping, not pyautoattack's `state_path` (see autoattack_ref's docstring for why). The state
is a JSON document (robust flags, the attack that fooled each point, the attacks done, the batch reached) plus
tensor shards holding the adversarial examples found so far. It goes through a `StateSlot`
(`results.store`: `FileStore.slot` in a run directory, `MemoryStore.slot` in memory): this module does no file
I/O and never sees a path. A shard is saved before the document that counts it, so a kill between the two
leaves the previous, readable state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError

if TYPE_CHECKING:
    from ..results.store import StateSlot

STATE_FORMAT = "robustbench-lr/autoattack-state/1"


@dataclass
class AAState:
    """Progress of one AutoAttack run over n points (JSON-serialisable; the adversarial examples are in shards).

    Attributes:
        key: hash of the data, the model's clean predictions and the settings (a state of another run is refused).
        clean_correct, robust: (n,) flags; fooled_by: the attack that fooled each point ('clean', '' if robust).
        done: attacks finished; accuracy: robust accuracy after each; per_attack: counts and seconds per attack.
        messages: AutoAttack's check messages so far.
        current, start_idx, chunks_done: the attack in progress, the points it attacks, the batches it finished.
        shards: tensor shards saved so far; finished: every attack ran and the final checks are in `messages`.
    """

    key: str
    clean_correct: list[bool]
    robust: list[bool]
    fooled_by: list[str]
    done: list[str] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    per_attack: dict[str, dict[str, float]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    current: str = ""
    start_idx: list[int] = field(default_factory=list)
    chunks_done: int = 0
    shards: int = 0
    finished: bool = False


def state_key(x: Tensor, y: Tensor, config: dict[str, Any]) -> str:
    """Hash of the points, labels and `config` (settings and clean predictions) that a saved state must match."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().long().numpy().tobytes())
    return h.hexdigest()[:24]


def _restore(slot: StateSlot, key: str, x: Tensor) -> tuple[AAState, Tensor] | None:
    """The saved state and x_adv rebuilt from its shards; None if the slot is empty."""
    d = slot.read()
    if d is None:
        return None
    try:
        if d.pop("format", None) != STATE_FORMAT:
            raise ValueError("not an AutoAttack state of robustbench-lr")
        st = AAState(**d)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{slot.where} is not a readable AutoAttack state ({exc}).") from None
    if st.key != key:
        raise UserError(f"{slot.where} was written by a different AutoAttack run (other data, model outputs, norm, "
                        f"eps, version, seed or batch size); delete it or use another run directory.")
    x_adv = x.clone()
    for k in range(st.shards):
        shard = slot.read_shard(k)
        x_adv[shard["idx"]] = shard["x_adv"].to(x_adv.dtype)
    return st, x_adv


def save_state(slot: StateSlot | None, st: AAState, idx: Tensor | np.ndarray | None = None,
               adv: Tensor | None = None) -> None:
    """Save the new adversarial examples `adv` of points `idx` (a shard, if any) and then the state document."""
    if slot is None:
        return
    if idx is not None and adv is not None and len(idx):
        slot.write_shard(st.shards, {"idx": torch.as_tensor(idx, dtype=torch.long), "x_adv": adv.contiguous()})
        st.shards += 1
    slot.write({"format": STATE_FORMAT, **asdict(st)})


def open_state(slot: StateSlot | None, key: str, x: Tensor, cc: np.ndarray) -> tuple[AAState, Tensor, bool]:
    """(state, x_adv, resumed): the saved state of this run if there is one, else a fresh one (saved at once)."""
    restored = _restore(slot, key, x) if slot is not None else None
    if restored is not None:
        return restored[0], restored[1], True
    st = AAState(key, cc.tolist(), cc.tolist(), ["" if c else "clean" for c in cc],
                 accuracy={"clean": float(cc.mean()) if len(cc) else float("nan")})
    save_state(slot, st)
    return st, x.clone(), False


__all__ = ["AAState", "STATE_FORMAT", "open_state", "save_state", "state_key"]
