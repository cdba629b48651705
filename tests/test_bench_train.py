"""The training-step bench (issue 15, GPU item 3 and its CPU counterpart): the step really trains, the rows and
ratios are consistent, `--size` changes the input, bad arguments exit 2. Tiny shapes; no timed assertions."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from robustbench_lr.bench import train
from robustbench_lr.models import create_model


def test_step_is_a_real_sgd_step():
    torch.manual_seed(0)
    model = create_model("resnet_tiny")
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    step = train.make_step(model, x, y, amp=False)
    losses = [step() for _ in range(8)]
    assert model.training
    assert losses[-1] < losses[0]  # the same batch, fitted
    assert all(p.grad is None for p in model.parameters())  # set to None after each step
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed > len(before) // 2


def test_run_rows_and_ratio(tmp_path):
    rows = train.run(("lrnet_tiny", "resnet_tiny"), 1.0, 16, 2, 2, torch.device("cpu"))
    a, b, ratio = rows
    assert (a["model"], b["model"]) == ("lrnet_tiny", "resnet_tiny")
    assert ratio["model"] == "ratio lrnet_tiny / resnet_tiny"
    assert a["shape"] == b["shape"] == "2x1x16x16"  # --size overrides the native 28 px
    assert a["step_ms_min"] <= a["step_ms_median"]
    assert math.isclose(ratio["img_s_min"], a["img_s_min"] / b["img_s_min"])
    assert math.isclose(ratio["img_s_median"], a["img_s_median"] / b["img_s_median"])
    assert a["peak_mb"] > 0 and b["peak_mb"] > 0  # small inputs: the CPU memory profile runs
    assert 0 < a["GMACs_fwd"] < b["GMACs_fwd"]  # lrnet_tiny does fewer MACs than resnet_tiny


def test_main_writes_a_csv_pandas_reads(tmp_path, capsys):
    out = tmp_path / "train.csv"
    assert train.main(["--pair", "lrnet_tiny,resnet_tiny", "--batch", "2", "--rounds", "1", "--size", "12",
                       "--device", "cpu", "--csv", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df["model"]) == ["lrnet_tiny", "resnet_tiny", "ratio lrnet_tiny / resnet_tiny"]
    assert "device=cpu" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--pair", "lrnet_tiny,resnet_tny"], "Did you mean 'resnet_tiny'"),
    (["--pair", "lrnet_tiny"], "two models"),
    (["--batch", "0"], "--batch"),
    (["--size", "4"], "--size"),
])
def test_bad_arguments_exit_2_before_building(argv, message, capsys, monkeypatch):
    _refused_before_running(argv, message, capsys, monkeypatch)


def test_unwritable_csv_is_refused_before_timing(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused_before_running(["--csv", str(blocker / "out.csv")], "--csv", capsys, monkeypatch)
    _refused_before_running(["--csv", str(tmp_path / "out.txt")], ".csv", capsys, monkeypatch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def _refused_before_running(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("ran despite a bad argument"))
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
