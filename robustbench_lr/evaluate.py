"""Attack evaluation of one or more checkpoints on the same examples: sweeps, hygiene checks, statistics.

`run_evaluation(cfg, store)` returns an `Evaluation` of tidy pandas tables:
- `results`: one row per (model, attack, norm, eps) with counts (n_total, n_clean_correct, n_correct), accuracy,
  its Clopper-Pearson 95% interval, the attack settings, seconds and gradient evaluations. Per model it also has
  a 'clean' row and, per eps present for every attack of the norm, a 'worst-case' row: an example counts as
  robust only if every attack of the run failed on it (AutoAttack's per-example worst case).
- `paired`: for each (attack, eps), exact McNemar tests between every pair of models on the same examples.
- `hygiene`: the checks of `attacks.hygiene`, one row each (pass / warn / fail with figures).
- `outcomes`: per example, model and attack: clean correctness and the smallest eps that fooled it.

Progress is persisted through `store` (the CLI gives a file store) after every finished eps, so a re-run skips
finished cells. Under torchrun the examples are sharded across ranks and the per-example outcomes gathered.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from . import distributed as D
from .attacks.hygiene import run_checks
from .attacks.registry import AttackSpec, random_targets
from .attacks.sweep import SweepState, prepare_for_attack, run_sweep
from .attacks.threat import validate_eps
from .checkpoint import load_model, read_meta
from .data import load_dataset
from .errors import UserError
from .results import finalize, fmt_strength, model_columns
from .stats import paired_comparisons
from .utils import resolve_device

log = logging.getLogger(__name__)
SUBSET_SEED = 0


class Store(Protocol):
    """Where resumable progress lives (the CLI writes JSON files atomically)."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def save(self, key: str, obj: dict[str, Any]) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def load(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def save(self, key: str, obj: dict[str, Any]) -> None:
        self.data[key] = json.loads(json.dumps(obj))


@dataclass
class EvalConfig:
    """An evaluation. eps values are floats in the attack's norm on [0, 1] pixels."""

    checkpoints: list[str]
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "pgd"])
    norm: str = "linf"
    eps: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3])
    steps: int = 20
    restarts: int = 1
    step_size: float = 2.5
    random_start: bool = True
    n: int = 1000
    batch_size: int = 256
    seed: int = 0
    dataset: str | None = None
    data_root: str | None = None
    device: str = "auto"
    hygiene: bool = True
    n_check: int = 200

    def specs(self) -> list[AttackSpec]:
        if not self.attacks:
            raise UserError("give at least one --attack.")
        return [AttackSpec(a, norm=self.norm, steps=self.steps, restarts=self.restarts, step_size=self.step_size,
                           random_start=self.random_start) for a in dict.fromkeys(self.attacks)]


@dataclass
class Evaluation:
    results: pd.DataFrame
    paired: pd.DataFrame
    hygiene: pd.DataFrame
    outcomes: pd.DataFrame
    meta: dict[str, Any]


def parse_eps(text: str) -> list[float]:
    """'0,0.05,8/255' -> [0.0, 0.05, 0.0313...]; fractions become floats."""
    from fractions import Fraction

    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(Fraction(part)))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"cannot parse eps value {part!r}; use numbers or fractions such as 8/255.") from None
    if not out:
        raise UserError("--eps needs at least one value.")
    return out


def model_labels(paths: list[str]) -> list[str]:
    """Short unique labels for checkpoints: their directory names, suffixed with #k when they repeat."""
    names = []
    for p in paths:
        path = Path(p).expanduser()
        if path.name in ("model.json", "model.safetensors"):
            path = path.parent
        names.append(path.resolve().name)
    counts: dict[str, int] = {}
    out = []
    for n in names:
        counts[n] = counts.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}#{counts[n]}")
    return out


def eval_indices(n_split: int, n: int) -> np.ndarray:
    """The first n examples of a fixed permutation (seed 0) of the split: the same for every model and run."""
    return np.random.default_rng(SUBSET_SEED).permutation(n_split)[:n]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class EvalSet:
    """The checkpoints and the examples they are evaluated on (the same for every model)."""

    metas: list[dict[str, Any]]
    labels: list[str]
    dataset: str
    split_seed: int | None
    input_size: list[int]
    num_classes: int
    indices: np.ndarray  # positions in the test split
    x: torch.Tensor  # (n, C, H, W) in [0, 1]
    y: torch.Tensor  # (n,)


def load_eval_set(checkpoints: list[str], dataset: str | None, data_root: str | None, n: int) -> EvalSet:
    """Read the checkpoints' descriptions, check they share a dataset and split, and load the first n examples of a
    fixed permutation of its test split. Raises UserError for a mismatch or an n larger than the split."""
    if not checkpoints:
        raise UserError("give at least one --checkpoint.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"--n must be a positive integer; got {n!r}.")
    metas = [read_meta(p) for p in checkpoints]
    datasets = {m["dataset"]["name"] for m in metas}
    if dataset is not None:
        wrong = [(p, m["dataset"]["name"]) for p, m in zip(checkpoints, metas) if m["dataset"]["name"] != dataset]
        if wrong:
            raise UserError(f"checkpoint {wrong[0][0]} was trained on {wrong[0][1]!r}, not on --dataset {dataset!r}.")
    elif len(datasets) > 1:
        raise UserError(f"the checkpoints were trained on different datasets ({', '.join(sorted(datasets))}); "
                        f"evaluate them separately.")
    dname = dataset or datasets.pop()
    split_seeds = {m["dataset"].get("split_seed") for m in metas}
    if len(split_seeds) > 1:
        raise UserError("the checkpoints use different split seeds of the dataset; their test examples differ.")
    split_seed = split_seeds.pop()
    size = list(metas[0]["dataset"]["input_size"])
    test = load_dataset(dname, "test", data_root, False, image_size=int(size[-1]),
                        split_seed=split_seed if split_seed is not None else 0)
    if n > len(test):
        raise UserError(f"--n {n} is larger than the {len(test)} examples of the {dname} test split.")
    idx = eval_indices(len(test), n)
    x = torch.stack([test[int(i)][0] for i in idx])  # (n, C, H, W) in [0, 1]
    y = torch.as_tensor([int(test.labels[int(i)]) for i in idx], dtype=torch.long)
    return EvalSet(metas, model_labels(checkpoints), dname, split_seed, size, int(metas[0]["dataset"]["num_classes"]),
                   idx, x, y)


def run_evaluation(cfg: EvalConfig, store: Store | None = None, progress: bool = False,
                   on_adv: Callable[[str, str, float, np.ndarray, torch.Tensor], None] | None = None,
                   ctx: D.DistContext | None = None, after_cell: Callable[[], None] | None = None) -> Evaluation:
    """Evaluate every checkpoint of `cfg` with every attack at every eps; see the module docstring.

    Args:
        cfg: the evaluation.
        store: resumable progress (default: in memory).
        progress: show progress bars.
        on_adv: receives (model label, attack key, eps, dataset indices, adversarial images) of fooled examples.
        ctx: torchrun context (default: one process on cfg.device).
        after_cell: called after each finished (model, attack, eps) cell, once its progress is saved.
    """
    store = store or MemoryStore()
    ctx = ctx or D.DistContext(0, 1, 0, resolve_device(cfg.device))
    device = ctx.device
    specs = cfg.specs()
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1; got {cfg.batch_size!r}.")

    es = load_eval_set(cfg.checkpoints, cfg.dataset, cfg.data_root, cfg.n)
    metas, dname, split_seed, x, y, idx, num_classes, labels = (es.metas, es.dataset, es.split_seed, es.x, es.y,
                                                                  es.indices, es.num_classes, es.labels)
    eps_list = validate_eps(cfg.eps, specs[0].norm, tuple(es.input_size))
    shard = np.arange(ctx.rank, cfg.n, ctx.world_size) if ctx.distributed else None

    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    outcome_frames = []
    correct_vectors: dict[tuple[str, str, float], dict[str, np.ndarray]] = {}
    for label, path, meta in zip(labels, cfg.checkpoints, metas):
        model = prepare_for_attack(load_model(path, device=device))
        base = {**model_columns(label, path, meta), "dataset": dname, "n_total": int(cfg.n)}
        sweeps: dict[str, SweepState] = {}
        for spec in specs:
            key = f"sweep__{label}__{spec.key}"
            fp = _fingerprint(meta["weights_sha256"], dname, cfg.n, spec.to_dict(), eps_list, cfg.seed, SUBSET_SEED,
                              split_seed)
            saved = store.load(key)
            state = SweepState.from_dict(saved["state"]) if saved and saved.get("fingerprint") == fp else None
            if saved and state is None:
                log.info("%s: settings changed since the saved progress; starting this sweep again", key)
            targets = random_targets(y, num_classes, cfg.seed) if spec.targeted == "random" else None
            todo = [e for e in eps_list if state is None or e not in state.done]
            bar = _bar(progress and ctx.is_main and bool(todo), f"{label} {spec.key}")

            def save(st: SweepState, key: str = key, fp: str = fp) -> None:
                if ctx.is_main:
                    store.save(key, {"fingerprint": fp, "state": st.to_dict()})
                if after_cell is not None:
                    after_cell()

            def adv_cb(eps: float, ex: np.ndarray, xa: torch.Tensor, label: str = label, spec: AttackSpec = spec) -> None:
                if on_adv is not None:
                    on_adv(label, spec.key, eps, idx[ex], xa)

            st = run_sweep(model, x, y, spec, eps_list, num_classes=num_classes, seed=cfg.seed,
                           batch_size=cfg.batch_size, device=device, state=state, targets=targets, shard=shard,
                           reduce=(lambda s, c: _reduce(s, c, ctx)) if ctx.distributed else None,
                           on_cell=save, on_adv=adv_cb if on_adv is not None else None, progress=bar)
            if bar is not None:
                bar.close()
            sweeps[spec.key] = st
            for r in st.rows:
                rows.append({**base, **spec.settings(r["eps"]), **r})
                correct_vectors.setdefault((spec.key, "", r["eps"]), {})[label] = st.correct_at(r["eps"])
            outcome_frames.append(pd.DataFrame({
                "model": label, "attack": spec.name, "norm": spec.norm, "example": np.arange(cfg.n),
                "dataset_index": idx, "label": y.numpy(), "clean_correct": st.clean_correct,
                "min_eps": st.min_eps, "target": targets.numpy() if targets is not None else -1,
                "target_hit_eps": st.target_hit_eps,
            }))
        first = next(iter(sweeps.values()))
        rows.append({**base, **_clean_settings(), "n_clean_correct": int(first.clean_correct.sum()),
                     "n_correct": int(first.clean_correct.sum()), "n_attacked": 0, "n_fooled_here": 0,
                     "n_target_hit": 0, "grad_evals": 0, "forward_evals": cfg.n, "seconds": float("nan")})
        correct_vectors.setdefault(("clean", "", 0.0), {})[label] = first.clean_correct
        for eps in eps_list:
            wc = np.all([s.correct_at(eps) for s in sweeps.values()], axis=0)
            rows.append({**base, **_clean_settings(), "attack": "worst-case", "norm": specs[0].norm, "eps": float(eps),
                         "protocol": "per-example worst case over: " + ", ".join(s.key for s in specs),
                         "n_clean_correct": int(first.clean_correct.sum()), "n_correct": int(wc.sum()),
                         "n_attacked": 0, "n_fooled_here": 0, "n_target_hit": 0,
                         "grad_evals": int(sum(r["grad_evals"] for s in sweeps.values() for r in s.rows
                                               if r["eps"] == eps)),
                         "forward_evals": 0, "seconds": float("nan")})
            correct_vectors.setdefault(("worst-case", "", eps), {})[label] = wc
        if cfg.hygiene and ctx.is_main:
            key = f"hygiene__{label}"
            fp = _fingerprint(meta["weights_sha256"], dname, cfg.n, [s.to_dict() for s in specs], eps_list, cfg.seed,
                              cfg.n_check)
            saved = store.load(key)
            if saved and saved.get("fingerprint") == fp:
                hyg = saved["rows"]
            else:
                log.info("%s: running hygiene checks on %d examples", label, min(cfg.n_check, cfg.n))
                hyg = run_checks(model, label, x, y, sweeps=sweeps, specs=specs, eps_list=eps_list,
                                 norm=specs[0].norm, num_classes=num_classes, seed=cfg.seed,
                                 batch_size=cfg.batch_size, device=device, n_check=cfg.n_check, steps=cfg.steps)
                store.save(key, {"fingerprint": fp, "rows": hyg})
            checks.extend(hyg)
        D.barrier(ctx)

    for r in rows:
        r.update(family="clean" if r["attack"] == "clean" else r["norm"], perturbation=r["attack"],
                 param_name="eps", param_value=r["eps"])
    results = finalize(rows)
    paired = []
    for (attack, _, eps), vecs in correct_vectors.items():
        if len(vecs) < 2:
            continue
        df = paired_comparisons(vecs, labels)
        df.insert(0, "eps", float(eps))
        df.insert(0, "norm", "" if attack == "clean" else specs[0].norm)
        df.insert(0, "attack", attack.rsplit("-", 1)[0] if attack not in ("clean", "worst-case") else attack)
        paired.append(df)
    meta_out = {"config": asdict(cfg), "labels": labels, "dataset": dname, "split": "test", "split_seed": split_seed,
                "eval_indices_seed": SUBSET_SEED, "num_classes": num_classes, "eps": eps_list,
                "attacks": [s.to_dict() | {"settings_at_first_eps": s.settings(eps_list[-1])} for s in specs],
                "device": str(device), "world_size": ctx.world_size}
    return Evaluation(results, pd.concat(paired, ignore_index=True) if paired else pd.DataFrame(),
                      pd.DataFrame(checks), pd.concat(outcome_frames, ignore_index=True), meta_out)


def _clean_settings() -> dict[str, Any]:
    return {"attack": "clean", "norm": "", "eps": 0.0, "targeted": "", "restarts": 0, "steps": 0,
            "step_size": float("nan"), "random_start": False, "queries": 0, "protocol": ""}


def _reduce(state: SweepState, counters: dict[str, float], ctx: D.DistContext) -> dict[str, float]:
    """Combine one cell over ranks: per-example minima of min_eps / target_hit_eps, sums of counters."""
    for arr in (state.min_eps, state.target_hit_eps):
        t = torch.from_numpy(arr.copy())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        arr[:] = t.numpy()
    v = torch.tensor([counters["grad_evals"], counters["forward_evals"], counters["n_attacked"]], dtype=torch.float64)
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    s = torch.tensor([counters["seconds"]], dtype=torch.float64)
    dist.all_reduce(s, op=dist.ReduceOp.MAX)
    return {"grad_evals": float(v[0]), "forward_evals": float(v[1]), "n_attacked": float(v[2]), "seconds": float(s[0])}


def _bar(enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit="ex", dynamic_ncols=True, leave=False)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per model (rows) and attack@eps (columns), for the terminal."""
    df = results.copy()
    df["cell"] = np.where(df["attack"] == "clean", "clean", df["attack"] + "@" + df["eps"].map(fmt_strength))
    order = list(dict.fromkeys(df["cell"]))
    pv = df.pivot_table(index="model", columns="cell", values="accuracy", aggfunc="first", sort=False)
    return (100 * pv[[c for c in order if c in pv.columns]]).round(1)


__all__ = ["EvalConfig", "Evaluation", "MemoryStore", "Store", "parse_eps", "run_evaluation", "summary_table"]
