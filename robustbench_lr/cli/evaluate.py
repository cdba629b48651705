"""`robustbench-lr evaluate`: attack sweeps over eps for one or more checkpoints, written to --out.

Files (all written atomically):
    results.csv    one row per (model, attack, norm, eps) + clean and worst-case rows (counts, CIs, settings)
    paired.csv     exact McNemar tests between models on the same examples
    hygiene.csv    evaluation-hygiene checks (pass / warn / fail)
    outcomes.csv   per example: clean correctness and the smallest eps that fooled it
    run.json       the command, configuration, versions and device
    state/         progress after every finished eps (a re-run of the same command resumes from it)
    adv/           adversarial examples (safetensors) with --save-adv
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..utils import write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_EPS = {
    ("mnist5k", "linf"): "0,0.05,0.1,0.2,0.3", ("mnist5k", "l2"): "0,0.5,1,2,3",
    ("cifar10", "linf"): "0,1/255,2/255,4/255,8/255", ("cifar10", "l2"): "0,0.125,0.25,0.5,1",
    ("imagefolder", "linf"): "0,1/255,2/255,4/255", ("imagefolder", "l2"): "0,0.25,0.5,1",
}


class FileStore:
    """Resumable progress as JSON files in a directory (atomic writes; unreadable files are ignored)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_.#" else "_" for c in key)
        return self.root / f"{safe}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        p = self._path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable progress file %s", p)
            return None

    def save(self, key: str, obj: dict[str, Any]) -> None:
        write_json_atomic(self._path(key), obj)


class AdvSaver:
    """Collects fooled examples per (model, attack, eps) and writes adv/<model>__<attack>__eps<eps>.safetensors."""

    def __init__(self, root: Path, suffix: str = "") -> None:
        self.root, self.suffix = root, suffix
        self.key: tuple[str, str, float] | None = None
        self.idx: list[np.ndarray] = []
        self.img: list[torch.Tensor] = []

    def __call__(self, label: str, attack: str, eps: float, indices: np.ndarray, images: torch.Tensor) -> None:
        key = (label, attack, float(eps))
        if key != self.key:
            self.flush()
            self.key = key
        self.idx.append(np.asarray(indices))
        self.img.append(images)

    def flush(self) -> None:
        if self.key is None or not self.idx:
            self.key, self.idx, self.img = None, [], []
            return
        from safetensors.torch import save_file

        label, attack, eps = self.key
        path = self.root / f"{label}__{attack}__eps{eps:g}{self.suffix}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("." + path.name + ".tmp")
        save_file({"dataset_index": torch.from_numpy(np.concatenate(self.idx).astype(np.int64)),
                   "images": torch.cat(self.img).contiguous()}, str(tmp),
                  metadata={"model": label, "attack": attack, "eps": repr(eps)})
        tmp.replace(path)
        self.key, self.idx, self.img = None, [], []


def run(args: argparse.Namespace) -> int:
    from .. import distributed as D
    from ..attacks.threat import check_norm
    from ..checkpoint import package_versions, read_meta
    from ..evaluate import EvalConfig, parse_eps, run_evaluation, summary_table

    if not args.checkpoint:
        raise UserError("give at least one --checkpoint DIR.")
    metas = [read_meta(c) for c in args.checkpoint]  # fails early on a missing or foreign checkpoint
    norm = check_norm(args.norm)
    dname = args.dataset or metas[0]["dataset"]["name"]
    eps_text = args.eps or DEFAULT_EPS.get((dname, norm))
    if eps_text is None:
        raise UserError("give --eps for this dataset and norm.")
    cfg = EvalConfig(checkpoints=list(args.checkpoint), attacks=list(args.attack or ["fgsm", "pgd"]), norm=norm,
                     eps=parse_eps(eps_text), steps=args.steps, restarts=args.restarts, step_size=args.step_size,
                     random_start=not args.no_random_start, n=args.n, batch_size=args.batch_size, seed=args.seed,
                     dataset=args.dataset, data_root=args.data_root, device=args.device, hygiene=not args.no_hygiene,
                     n_check=args.check_n)
    cfg.specs()  # validates attack names, norms and step options before any work
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory.")
    ctx = D.init_distributed(args.device)
    try:
        t0 = time.perf_counter()
        saver = AdvSaver(out / "adv", f".rank{ctx.rank}" if ctx.distributed else "") if args.save_adv else None
        store = FileStore(out / "state")  # directory created with the first saved cell
        ev = run_evaluation(cfg, store=store, progress=not args.quiet, on_adv=saver, ctx=ctx,
                            after_cell=saver.flush if saver else None)
        if saver:
            saver.flush()
        if not ctx.is_main:
            return 0
        write_csv_atomic(ev.results, out / "results.csv")
        write_csv_atomic(ev.paired, out / "paired.csv")
        write_csv_atomic(ev.hygiene, out / "hygiene.csv")
        write_csv_atomic(ev.outcomes, out / "outcomes.csv")
        write_json_atomic(out / "run.json", {
            "command": args.command_line, **ev.meta,
            "versions": package_versions(), "seconds": time.perf_counter() - t0,
            "checkpoints": {lab: {"path": c, "sha256": m["weights_sha256"], "model": m["model"]}
                            for lab, c, m in zip(ev.meta["labels"], cfg.checkpoints, metas)},
        })
        _print_summary(ev, summary_table, out)
    finally:
        D.cleanup()
    return 0


def _print_summary(ev: Any, summary_table: Any, out: Path) -> None:
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 40):
        print("robust accuracy (%), same examples for every model:")
        print(summary_table(ev.results).to_string())
    if not ev.hygiene.empty:
        bad = ev.hygiene[ev.hygiene["status"] != "pass"]
        counts = ev.hygiene["status"].value_counts().to_dict()
        print(f"\nhygiene checks: {counts.get('pass', 0)} pass, {counts.get('warn', 0)} warn, "
              f"{counts.get('fail', 0)} fail")
        for _, r in bad.iterrows():
            print(f"  {r['status'].upper():4s} {r['model']}: {r['check']} ({r['detail']}; value {r['value']:.4g})")
    print(f"\nwrote {out}/results.csv, paired.csv, hygiene.csv, outcomes.csv, run.json")


def register(sub: argparse._SubParsersAction) -> None:
    from ..attacks.registry import ATTACKS

    p = sub.add_parser("evaluate", help="attack sweeps over eps with hygiene checks and statistics",
                       description="Evaluate checkpoints under attacks over a list of eps, on the same examples. "
                                   "Example: robustbench-lr evaluate --checkpoint runs/lr7 --checkpoint runs/conv3 "
                                   "--attack fgsm --attack pgd --norm linf --eps 0,0.05,0.1,0.2,0.3 --steps 20 "
                                   "--n 1000 --out runs/eval1")
    p.add_argument("--checkpoint", action="append", default=[], metavar="DIR", help="checkpoint directory (repeat)")
    p.add_argument("--attack", action="append", default=None, metavar="NAME",
                   help=f"repeatable; one of: {', '.join(ATTACKS)} (default: fgsm and pgd)")
    p.add_argument("--norm", default="linf", help="linf | l2")
    p.add_argument("--eps", default=None, help="comma list, fractions allowed (e.g. 0,2/255,8/255); default per dataset")
    p.add_argument("--steps", type=int, default=20, help="iterations of PGD/APGD (AutoAttack uses its reference 100)")
    p.add_argument("--restarts", type=int, default=1, help="random restarts of PGD/APGD")
    p.add_argument("--step-size", type=float, default=2.5, help="PGD step as a multiple of eps/steps")
    p.add_argument("--no-random-start", action="store_true", help="PGD starts at the clean image (deterministic)")
    p.add_argument("--n-examples", "--n", dest="n", type=int, default=1000,
                   help="examples of the test split (a fixed seeded subset); under torchrun write --n-examples, "
                        "since torchrun reads --n as an abbreviation of its own options")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of random starts and random targets")
    p.add_argument("--dataset", default=None, help="must match the checkpoints' dataset (default: theirs)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--save-adv", action="store_true", help="also save the adversarial examples (safetensors)")
    p.add_argument("--no-hygiene", action="store_true", help="skip the hygiene checks")
    p.add_argument("--check-n", type=int, default=200, help="clean-correct examples used by the hygiene checks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
