"""Smoke test of `python -m robustbench_lr.bench minnorm` on an untrained tiny model (no timing asserts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustbench_lr.bench import BENCHES
from robustbench_lr.bench.__main__ import main as bench_main


def test_minnorm_bench_runs_and_reports_costs_curves_and_agreement(tmp_path, capsys):
    assert BENCHES["minnorm"] == "robustbench_lr.bench.minnorm"
    csv = tmp_path / "minnorm.csv"
    assert bench_main(["minnorm", "--fresh", "resnet_tiny", "--n", "8", "--eps", "0,0.02,0.05,0.1,0.3",
                       "--fmn-steps", "10", "--pgd-steps", "3", "--batch-size", "8", "--device", "cpu",
                       "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "| model | eps | n | FMN robust % [95% CI] | PGD robust % [95% CI] |" in out
    assert "fmn_grad_evals" in out and "pgd_grad_evals" in out
    df = pd.read_csv(csv)
    assert len(df) == 5 and list(df["eps"]) == [0, 0.02, 0.05, 0.1, 0.3] and (df["n"] == 8).all()
    assert df["fmn_acc"].is_monotonic_decreasing and df["pgd_acc"].is_monotonic_decreasing
    assert df.loc[0, "fmn_acc"] == df.loc[0, "pgd_acc"] and df.loc[0, "agree"] == 1.0  # eps 0: clean accuracy
    assert ((df["fmn_ci_low"] <= df["fmn_acc"]) & (df["fmn_acc"] <= df["fmn_ci_high"])).all()
    # robust under one attack only, both ways, add up to the disagreements
    assert np.allclose(1 - df["agree"], (df["fmn_only_robust"] + df["pgd_only_robust"]) / 8)
    assert df["mcnemar_p"].between(0, 1).all() and (df["fmn_steps"] == 10).all() and (df["pgd_steps"] == 3).all()
    assert (df["fmn_seconds"] > 0).all() and (df["pgd_seconds"] > 0).all()
    clean_correct = round(df.loc[0, "fmn_acc"] * 8)
    if clean_correct:  # FMN spends its steps on each clean-correct example; PGD spends some
        assert df.loc[0, "fmn_grad_evals"] > 0 and df.loc[0, "pgd_grad_evals"] > 0


def test_minnorm_bench_needs_a_model(capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench_main(["minnorm", "--n", "4"])
    assert "--checkpoint DIR or --fresh MODEL" in capsys.readouterr().err
