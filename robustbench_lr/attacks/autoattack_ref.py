"""The official AutoAttack, run through pyautoattack, with its reliability checks captured as rows and a
resumable state.

Paper: Croce, Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020. https://arxiv.org/abs/2003.01690 (checks: https://github.com/fra31/auto-attack, flags_doc.md)

Status: the attacks, their parameters (`AutoAttack._set_version`) and the checks are pyautoattack 0.2.0's,
untouched. The wrapper drives `AutoAttack.run_standard_evaluation` one attack and one batch of still-robust
points at a time, in exactly the order and batches of one uninterrupted AutoAttack run (every attack reseeds
torch from `seed` per batch), so the robust flags are the same (tests/test_reference_attacks.py), and saves its
own state after every batch. It does not use pyautoattack's `state_path`: in 0.2.0 `EvaluationState.to_disk`
writes the set of attacks through json's `default=str`, so `from_disk` never matches it and every resume raises
"The state was created with a different set of attacks", and a restored run would hit an undefined `y_adv`.

- versions: 'standard' = APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries);
  'plus' = APGD-CE, APGD-DLR, FAB (5 restarts each), Square, APGD-T, FAB-T; 'rand' = APGD-CE, APGD-DLR with
  EOT over 20 draws. With fewer than 10 classes the targets are n_classes - 1 (9 would index past the logits).
- fewer than 4 classes: the targeted DLR loss needs 4 logits, the DLR loss 3 (auto-attack issues #70, #110).
  Default: UserError. `few_classes='fallback'` (CLI `--aa-few-classes fallback`, Python
  `aa_few_classes='fallback'`) drops those attacks (standard becomes APGD-CE, FAB-T, Square; plus and rand also
  drop APGD-DLR below 3 classes) and says so in a 'too_few_classes' warn row.
- checks: AutoAttack logs them through `logging.getLogger('auto-attack').warning`; a handler collects them
  while the wrapper runs (nothing reaches stdout or the root logger; debug lines go to this module's logger
  at DEBUG) and `check_rows` turns them into {check, status, detail} rows. A model whose output is a
  probability distribution is refused before any attack: `refused` says why and the rows hold a 'fail'.
- resume: with a `state` slot (`results.store.StateSlot`, handed out by the run's store), a killed run continues
  from the last finished batch. The state (`attacks.autoattack_state`: a JSON document and tensor shards) holds
  the robust flags, the attack that fooled each point and its adversarial example: after a resume `x_adv` is
  complete, including points fooled before the kill. This module does no file I/O itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError, check_choice, check_positive_int
from .autoattack_state import AAState, open_state, save_state, state_key
from .counting import CountingModel
from .prepare import predict
from .threat import check_adversarial, check_norm

if TYPE_CHECKING:
    from ..results.store import StateSlot

log = logging.getLogger(__name__)

AA_VERSIONS = ("standard", "plus", "rand")
VERSION_ATTACKS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
MIN_CLASSES = {"apgd-t": 4, "apgd-dlr": 3}  # DLR-targeted uses the top-4 logits, DLR the top-3
# (row name, status when AutoAttack raised it, fragments of AutoAttack's message)
CHECKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("randomized", "fail", ("randomized defense",)),
    ("softmax_output", "fail", ("probability distribution",)),
    ("too_few_classes", "fail", ("classes it is not possible", "target classes")),
    ("zero_gradients", "warn", ("zero gradient",)),
    ("square_beats_white_box", "warn", ("Square Attack has decreased",)),
    ("dynamic_defense", "warn", ("dynamic defense",)),
)


@dataclass
class AAResult:
    """One AutoAttack run over n points.

    Attributes:
        x_adv: (n, C, H, W) on CPU: AutoAttack's adversarial example where a point was fooled (also those fooled
            before an interruption, restored from the state), the clean image elsewhere.
        robust: (n,) bool, AutoAttack's robust flags: correct on the clean image and fooled by no attack.
        clean_correct: (n,) bool.
        fooled_by: (n,) the attack that fooled each point, 'clean' if misclassified clean, '' if robust.
        flags: AutoAttack's checks as rows {check, status: pass|warn|fail, detail}, plus 'recheck' (a plain fp32
            forward agrees with the flags).
        attacks: the attacks run, in order; accuracy: AutoAttack's robust accuracy over all n after each attack.
        per_attack: rows {attack, n_attacked, n_fooled, forwards, grad_evals, seconds}.
        forwards, grad_evals: per-example passes of all attacks and checks (CountingModel), summed over runs.
        seconds: attack wall time, summed over the runs of a resumed evaluation.
        resumed: this call continued a saved state. refused: why no attack ran ('' if they did).
        settings: norm, eps, version, seed, batch size, targets, implementation.
    """

    x_adv: Tensor
    robust: np.ndarray
    clean_correct: np.ndarray
    fooled_by: list[str]
    flags: list[dict[str, str]]
    attacks: tuple[str, ...]
    accuracy: dict[str, float]
    per_attack: list[dict[str, Any]]
    forwards: int = 0
    grad_evals: int = 0
    seconds: float = 0.0
    resumed: bool = False
    refused: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def robust_accuracy(self) -> float:
        """Fraction of all n points robust; nan when refused (no attack ran, no robustness number exists)."""
        return float("nan") if self.refused or not len(self.robust) else float(self.robust.mean())


class _Capture(logging.Handler):
    """Collects AutoAttack's warnings (its checks); passes its debug/info lines to this module's logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.messages.append(msg)
        log.debug("autoattack: %s", msg)


@contextmanager
def _captured() -> Iterator[_Capture]:
    aa_log = logging.getLogger("auto-attack")
    saved = (aa_log.level, aa_log.propagate)
    handler = _Capture()
    aa_log.addHandler(handler)
    aa_log.setLevel(logging.DEBUG)
    aa_log.propagate = False
    try:
        yield handler
    finally:
        aa_log.removeHandler(handler)
        aa_log.setLevel(saved[0])
        aa_log.propagate = saved[1]


def check_rows(messages: list[str], notes: dict[str, str] | None = None) -> list[dict[str, str]]:
    """AutoAttack's check messages -> one row per check (pass when it raised nothing); `notes` gives the
    detail (and a 'warn') of checks the wrapper itself handled, e.g. the few-classes fallback."""
    notes = notes or {}
    rows, used = [], set()
    for name, severity, fragments in CHECKS:
        hits = [m for m in messages if any(f in m for f in fragments)]
        used.update(hits)
        if hits:
            more = f" (raised {len(hits)} times)" if len(hits) > 1 else ""
            rows.append({"check": name, "status": severity, "detail": hits[0] + more})
        elif name in notes:
            status = "warn" if notes[name].startswith("fallback") else "pass"
            rows.append({"check": name, "status": status, "detail": notes[name]})
        else:
            rows.append({"check": name, "status": "pass", "detail": "AutoAttack's check raised nothing"})
    rows += [{"check": "other", "status": "warn", "detail": m} for m in messages if m not in used]
    return rows


def plan_attacks(version: str, attacks: tuple[str, ...] | None, n_cls: int, few_classes: str = "error"
                 ) -> tuple[list[str], list[str]]:
    """(the attacks to run in the version's order, those dropped for too few classes); UserError when some need
    more classes than the model has and `few_classes` is 'error' (checked before any attack, also by runners)."""
    check_choice("version", version, AA_VERSIONS)
    check_choice("few_classes", few_classes, ("error", "fallback"))
    order = list(VERSION_ATTACKS[version])
    if attacks is not None:
        for a in attacks:
            check_choice("attacks", a, order)
        order = [a for a in order if a in attacks]
    if n_cls < 2:
        raise UserError(f"AutoAttack needs a classifier with at least 2 outputs; the model has {n_cls}.")
    short = [a for a in order if n_cls < MIN_CLASSES.get(a, 2)]
    if short and few_classes == "error":
        kept = ", ".join(a for a in order if a not in short) or "nothing"
        raise UserError(f"AutoAttack's {', '.join(short)} need at least {MIN_CLASSES[short[0]]} classes (DLR loss); "
                        f"the model has {n_cls}. Pass --aa-few-classes fallback (Python: benchmark(..., "
                        f"aa_few_classes='fallback') or run_official_autoattack(..., few_classes='fallback')) to run "
                        f"{version} without them ({kept}), or use another attack.")
    return [a for a in order if a not in short], short


def _plan(aa: Any, version: str, attacks: tuple[str, ...] | None, n_cls: int,
          few_classes: str) -> tuple[list[str], dict[str, str]]:
    """The attacks to run (the version's order) and notes; caps the targets of APGD-T / FAB-T at n_cls - 1."""
    order, short = plan_attacks(version, attacks, n_cls, few_classes)
    notes: dict[str, str] = {}
    targets = min(aa.apgd_targeted.n_target_classes, n_cls - 1)
    if targets < aa.apgd_targeted.n_target_classes:
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = targets
        notes["too_few_classes"] = f"{n_cls} classes: APGD-T / FAB-T use {targets} target classes (n_classes - 1)"
    if short:
        notes["too_few_classes"] = (f"fallback: {n_cls} classes, dropped {', '.join(short)} (DLR loss needs more "
                                    f"classes); ran {', '.join(order)}")
    return order, notes


def _run_one(aa: Any, attack: str, st: AAState, x: Tensor, y: Tensor, x_adv: Tensor, batch_size: int,
             counting: CountingModel, cap: _Capture, slot: StateSlot | None) -> None:
    """One attack over the points robust at its start, batch by batch, saving after each batch."""
    from pyautoattack import checks

    if st.current != attack:
        st.current, st.start_idx, st.chunks_done = attack, np.flatnonzero(st.robust).tolist(), 0
    todo = np.asarray(st.start_idx, dtype=np.int64)
    stats = st.per_attack.setdefault(attack, {"n_attacked": 0, "n_fooled": 0, "forwards": 0, "grad_evals": 0,
                                               "seconds": 0.0})
    aa.attacks_to_run = [attack]
    for c in range(st.chunks_done, math.ceil(len(todo) / batch_size)):
        ci = torch.from_numpy(todo[c * batch_size: (c + 1) * batch_size])
        counting.reset()
        cap.messages.clear()
        checks.funcs.update(dict.fromkeys(checks.funcs, 0))  # its dynamic-defence counters are module globals
        t0 = time.perf_counter()
        adv_c, y_c = aa.run_standard_evaluation(x[ci], y[ci], batch_size=batch_size)
        fooled = y_c.cpu() != y[ci]
        new = ci[fooled]
        x_adv[new] = adv_c.detach().cpu()[fooled].to(x_adv.dtype)
        for i in new.tolist():
            st.robust[i], st.fooled_by[i] = False, attack
        fw, ge = counting.reset()
        for k, v in (("n_attacked", len(ci)), ("n_fooled", len(new)), ("forwards", fw), ("grad_evals", ge),
                     ("seconds", time.perf_counter() - t0)):
            stats[k] += v
        st.messages += cap.messages
        st.chunks_done = c + 1
        save_state(slot, st, new, x_adv[new])
    st.accuracy[attack] = float(np.mean(st.robust))
    st.done.append(attack)
    st.current, st.start_idx, st.chunks_done = "", [], 0
    save_state(slot, st)


def _recheck(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, st: AAState, batch_size: int,
             device: torch.device) -> dict[str, str]:
    """A plain fp32 forward of x_adv must agree with the flags (it does not for a randomised model)."""
    wrong = (predict(model, x_adv, batch_size, device) != y).numpy()
    cc, rb = np.asarray(st.clean_correct), np.asarray(st.robust)
    bad = int(((cc & ~rb) & ~wrong).sum() + (rb & wrong).sum())
    if bad:
        return {"check": "recheck", "status": "fail",
                "detail": f"{bad} point(s) where a plain forward of x_adv disagrees with AutoAttack's flags"}
    return {"check": "recheck", "status": "pass", "detail": "a plain fp32 forward of x_adv agrees with the flags"}


def _setup(counting: CountingModel, x: Tensor, norm: str, eps: float, version: str, seed: int,
           device: torch.device, attacks: tuple[str, ...] | None, few_classes: str) -> tuple[Any, list[str],
                                                                                         dict[str, str]]:
    """AutoAttack with the version's parameters, the attacks to run and the few-classes notes."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(counting, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, seed=seed, version=version,
                    device=device)
    with torch.no_grad():
        n_cls = int(counting.model(x[:1].to(device)).shape[-1])
    plan, notes = _plan(aa, version, attacks, n_cls, few_classes)
    if version == "rand":
        notes["randomized"] = "not run: version 'rand' is the one for randomised defences"
    return aa, plan, notes


def _validate(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, version: str, few: str,
              batch_size: int) -> tuple[str, float]:  # refuse bad arguments before anything runs
    norm, eps = check_norm(norm), float(eps)
    check_choice("version", version, AA_VERSIONS), check_choice("few_classes", few, ("error", "fallback"))
    check_positive_int("batch_size", batch_size)
    if not (math.isfinite(eps) and eps > 0):
        raise UserError(f"AutoAttack needs eps > 0; got {eps!r}.")
    if len(x) == 0 or len(x) != len(y) or model.training:
        raise UserError(f"AutoAttack needs n >= 1 points with one label each ({len(x)} images, {len(y)} labels) "
                        "and a model in eval mode (use prepare_for_attack).")
    return norm, eps


def run_official_autoattack(model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float,
                            version: str = "standard", seed: int = 0, batch_size: int = 250,
                            device: torch.device | str = "cpu", state: StateSlot | None = None,
                            attacks: tuple[str, ...] | None = None, few_classes: str = "error") -> AAResult:
    """Run the official AutoAttack on (x, y); see the module docstring.

    Args:
        model: classifier on [0, 1] pixels returning logits, prepared with `prepare_for_attack`.
        x: (n, C, H, W) in [0, 1]; y: (n,) labels. Kept on CPU; AutoAttack moves each batch to `device`.
        norm: 'linf' or 'l2'. eps: budget in that norm (> 0).
        version: 'standard', 'plus' or 'rand'. seed: AutoAttack's seed (every attack, every batch).
        batch_size: points per AutoAttack batch.
        state: where the resumable state is kept (`results.store`: `FileStore(dir).slot(key)`), or None.
        attacks: a subset of the version's attacks (run in the version's order, with its parameters).
        few_classes: with fewer than 4 classes, 'error' (UserError) or 'fallback' (run the version without the
            attacks whose DLR loss needs more classes; a 'too_few_classes' warn row says which).
    """
    norm, eps = _validate(model, x, y, norm, eps, version, few_classes, batch_size)
    from pyautoattack import checks

    device = torch.device(device)
    x, y = x.detach().cpu(), y.detach().cpu().long()
    counting = CountingModel(model)
    with _captured() as cap:
        aa, plan, notes = _setup(counting, x, norm, eps, version, seed, device, attacks, few_classes)
        settings = {"norm": norm, "eps": eps, "version": version, "attacks": plan, "seed": seed,
                    "batch_size": batch_size, "targets": aa.apgd_targeted.n_target_classes,
                    "implementation": f"autoattack (official, pyautoattack {dist_version('pyautoattack')})"}
        pred = predict(model, x, batch_size, device)
        cc = (pred == y).numpy()
        cap.messages.clear()
        checks.check_range_output(aa.get_logits, x[:batch_size].to(device), logger=aa.logger)
        if cap.messages:  # a probability output: refuse before attacking
            return AAResult(x.clone(), cc.copy(), cc, ["" if c else "clean" for c in cc],
                            check_rows(list(cap.messages), notes), (), {}, [], refused="the model outputs "
                            "probabilities, not logits (AutoAttack's check)", settings=settings)
        key_config = {k: settings[k] for k in ("norm", "eps", "version", "attacks", "seed", "batch_size")}
        st, x_adv, resumed = open_state(state, state_key(x, y, {**key_config, "pred": pred.tolist()}), x, cc)
        for attack in plan:
            if st.finished or not any(st.robust):
                break
            if attack not in st.done:
                _run_one(aa, attack, st, x, y, x_adv, batch_size, counting, cap, state)
        if not st.finished:
            cap.messages.clear()
            checks.check_square_sr(dict(st.accuracy), logger=aa.logger)
            st.messages += cap.messages
            st.finished = True
            save_state(state, st)
    check_adversarial(x, x_adv, norm, eps, what=f"autoattack ({version}, {norm}, eps={eps:g})")
    flags = check_rows(st.messages, notes) + [_recheck(model, x, x_adv, y, st, batch_size, device)]
    per_attack = [{"attack": a, **st.per_attack[a]} for a in plan if a in st.per_attack]
    return AAResult(x_adv, np.asarray(st.robust, bool), np.asarray(st.clean_correct, bool), list(st.fooled_by),
                    flags, tuple(r["attack"] for r in per_attack), dict(st.accuracy), per_attack,
                    int(sum(r["forwards"] for r in per_attack)), int(sum(r["grad_evals"] for r in per_attack)),
                    float(sum(r["seconds"] for r in per_attack)), resumed, "", settings)


__all__ = ["AA_VERSIONS", "CHECKS", "VERSION_ATTACKS", "AAResult", "check_rows", "plan_attacks",
           "run_official_autoattack"]
