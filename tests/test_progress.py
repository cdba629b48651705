"""Progress: off a terminal one log line per cell (no per-batch lines, no carriage returns); on a terminal tqdm bars
with a total, advanced as the work is done, so they can show an ETA."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

from robustbench_lr import progress as P
from robustbench_lr.cli import main

EPS_LINE = re.compile(r"^(\S+) (fgsm|pgd)-linf eps=([\d.]+): (\d+)/(\d+) ex in ")
DEFORM_LINE = re.compile(r"^(\S+) (rotate|worst-of-k): (\d+)/(\d+) ex in ")
EVAL_ARGS = ["--attack", "fgsm", "--attack", "pgd", "--eps", "0.05,0.1", "--steps", "2", "--n", "48",
             "--batch-size", "4", "--no-hygiene", "--device", "cpu"]
DEFORM_ARGS = ["--deform", "rotate=0,20", "--deform", "worst-of-k=10,20", "--draws", "2", "--n", "48",
               "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def ck(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny checkpoint (resnet_tiny at width 0.25, one epoch on 256 examples: a few seconds)."""
    from robustbench_lr.training import TrainConfig, fit

    out = tmp_path_factory.mktemp("progress") / "tiny"
    fit(TrainConfig(model="resnet_tiny", epochs=1, batch_size=32, train_limit=256, model_kwargs={"width": 0.25},
                    device="cpu"), out, progress=False)
    return str(out)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the console script with stdout and stderr captured (pipes, not a terminal)."""
    script = Path(sys.executable).with_name("robustbench-lr")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "robustbench_lr"]
    res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "\r" not in res.stdout
    return res


def test_evaluate_off_a_terminal_logs_one_line_per_cell(ck, tmp_path):
    res = _cli("evaluate", "--checkpoint", ck, *EVAL_ARGS, "--out", str(tmp_path / "ev"))
    lines = [m for m in map(EPS_LINE.match, res.stderr.splitlines()) if m]
    cells = Counter((m[1], m[2], float(m[3])) for m in lines)
    assert 1 <= len(lines) <= 4 and max(cells.values()) == 1, res.stderr  # 1 model x 2 attacks x 2 eps, not per batch
    assert all(m[1] == "tiny" and m[4] == m[5] for m in lines), res.stderr
    results = pd.read_csv(tmp_path / "ev" / "results.csv")
    attacked = results[(results["n_attacked"] > 0) & results["attack"].isin(["fgsm", "pgd"])]
    assert len(attacked) == len(lines)  # a line for every attacked cell (a cell with nothing left to attack: none)
    assert len(res.stderr.splitlines()) <= 12, res.stderr


def test_deform_sweep_off_a_terminal_logs_one_line_per_deformation(ck, tmp_path):
    res = _cli("sweep", "deform", "--checkpoint", ck, *DEFORM_ARGS, "--out", str(tmp_path / "d"))
    lines = [m for m in map(DEFORM_LINE.match, res.stderr.splitlines()) if m]
    assert sorted(m[2] for m in lines) == ["rotate", "worst-of-k"], res.stderr
    done = {m[2]: (int(m[3]), int(m[4])) for m in lines}
    assert done == {"rotate": (48 * 3, 48 * 3), "worst-of-k": (48 * 2, 48 * 2)}  # rotate 0 is one draw, 20 two
    assert len(res.stderr.splitlines()) <= 8, res.stderr


class _Recorder:
    """Stands in for tqdm's class: real tqdm bars (drawn into a buffer) that remember their updates."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        made = self.made = []

        class Bar(tqdm):
            def __init__(self, *a, **kw) -> None:
                super().__init__(*a, **{**kw, "file": io.StringIO()})
                self.updates = 0
                made.append(self)

            def update(self, n: float = 1) -> bool | None:
                self.updates += 1
                return super().update(n)

        self.cls = Bar


@pytest.fixture
def terminal(monkeypatch) -> list:
    """Make `progress.bar` believe stderr is a terminal; returns the tqdm bars it makes."""
    import tqdm.auto

    rec = _Recorder()
    monkeypatch.setattr(P, "interactive", lambda: True)
    monkeypatch.setattr(tqdm.auto, "tqdm", rec.cls)
    return rec.made


def test_on_a_terminal_attack_bars_have_a_total(ck, tmp_path, terminal):
    assert main(["evaluate", "--checkpoint", ck, *EVAL_ARGS, "--out", str(tmp_path / "ev")]) == 0
    bars = [b for b in terminal if " eps=" in b.desc]
    assert bars
    results = pd.read_csv(tmp_path / "ev" / "results.csv")
    attacked = results[(results["n_attacked"] > 0) & results["attack"].isin(["fgsm", "pgd"])]
    assert sorted(b.total for b in bars) == sorted(attacked["n_attacked"])  # total known up front: an ETA
    assert all(b.n == b.total for b in bars)
    assert max(b.updates for b in bars) > 1 or max(b.total for b in bars) <= 4  # advanced per batch of 4


def test_on_a_terminal_deform_bars_have_a_total_and_advance(ck, tmp_path, terminal):
    assert main(["sweep", "deform", "--checkpoint", ck, *DEFORM_ARGS, "--out", str(tmp_path / "d")]) == 0
    bars = {b.desc: b for b in terminal}
    assert set(bars) == {"tiny rotate", "tiny worst-of-k"}
    assert bars["tiny rotate"].total == 48 * 3 and bars["tiny rotate"].updates == 3 * 6  # per batch of 8
    assert bars["tiny worst-of-k"].total == 48 * 2 and bars["tiny worst-of-k"].updates > 2  # per attacked chunk
    assert all(b.n == b.total for b in bars.values())


def test_progress_does_not_change_the_numbers(ck):
    from robustbench_lr.attacks import prepare_for_attack
    from robustbench_lr.checkpoint import load_model
    from robustbench_lr.data import load_dataset
    from robustbench_lr.runners.common import eval_indices
    from robustbench_lr.runners.deform_sweep import adversarial_sweep, random_sweep

    te = load_dataset("mnist5k", "test")
    x, y = te.batch(torch.as_tensor(eval_indices(len(te), 40)))
    model = prepare_for_attack(load_model(ck))
    kw = {"seed": 0, "batch_size": 16, "device": "cpu"}
    made: list[P.LogBar] = []

    def factory(total: int) -> P.LogBar:
        made.append(P.LogBar(total, "t", "ex"))
        return made[-1]

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    plain = random_sweep(model, x, y, "rotate", [0.0, 15.0], draws=2, **kw)
    assert strip(random_sweep(model, x, y, "rotate", [0.0, 15.0], draws=2, progress=factory, **kw)) == strip(plain)
    rows, mb = adversarial_sweep(model, x, y, "worst-of-k", [10.0, 5.0], k=3, **kw)
    rows2, mb2 = adversarial_sweep(model, x, y, "worst-of-k", [10.0, 5.0], k=3, progress=factory, **kw)
    assert strip(rows2) == strip(rows) and (mb2 == mb).all()
    assert [(b.n, b.total, b.closed) for b in made] == [(120, 120, True), (80, 80, True)]


def test_log_bar_is_one_line_on_close(caplog, monkeypatch):
    monkeypatch.setattr(P, "interactive", lambda: False)
    with caplog.at_level(logging.INFO, logger="robustbench_lr"):
        b = P.bar(True, 30, "m pgd eps=0.1", "ex")
        assert isinstance(b, P.LogBar)
        for _ in range(30):
            b.update()
        assert not caplog.records  # silent while it runs
        b.close()
        b.close()
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["m pgd eps=0.1: 30/30 ex"]
    assert P.bar(False, 30, "x") is None
