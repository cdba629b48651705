"""`robustbench-lr sweep kernel-size` and `sweep deform` end to end at tiny sizes, and their bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from robustbench_lr.cli import main

TINY_TRAIN = ["--epochs", "1", "--train-limit", "128", "--width", "0.25", "--train-batch-size", "32"]


@pytest.mark.slow
def test_kernel_size_sweep_has_one_row_per_model_k_and_perturbation(tmp_path):
    out = tmp_path / "ks"
    args = ["sweep", "kernel-size", "--model", "lrnet_tiny", "--model", "resnet_tiny", "--kernel-sizes", "3,5",
            "--seeds", "0", *TINY_TRAIN, "--attack", "pgd", "--eps", "0,0.1", "--steps", "2", "--check-n", "8",
            "--deform", "rotate=0,20", "--draws", "1", "--n", "16", "--quiet", "--out", str(out)]
    assert main(args) == 0
    res = pd.read_csv(out / "results.csv")
    assert set(res["kernel_size"]) == {3, 5} and set(res["model_name"]) == {"lrnet_tiny", "resnet_tiny"}
    key = ["model_name", "kernel_size", "perturbation", "param_value", "eps"]
    cells = res[res["family"] != "clean"].fillna({"param_value": -1, "eps": -1})
    assert not cells.duplicated(key).any()
    # every (model, k) has clean, pgd at 2 eps and rotate at 2 angles
    per = res.groupby(["model_name", "kernel_size"]).size()
    assert len(per) == 4 and per.nunique() == 1
    assert {"clean", "linf", "deform"} <= set(res["family"])
    summ = pd.read_csv(out / "summary.csv")
    assert (summ["seeds"] == 1).all()
    # a re-run reuses the four checkpoints and every evaluated cell
    assert main(args) == 0
    again = pd.read_csv(out / "results.csv")
    assert again["n_correct"].tolist() == res["n_correct"].tolist()


@pytest.mark.parametrize("extra,needle", [
    (["--kernel-sizes", "3,4"], "odd"),
    (["--kernel-sizes", "3", "--deform", "rotat"], "rotate"),
    (["--kernel-sizes", "3", "--deform", "rotate=0,200"], "180"),
    (["--kernel-sizes", "3", "--deform", "translate=-1"], ">= 0"),
    (["--kernel-sizes", "3", "--attack", "pgd", "--eps", "-0.1"], "eps"),
])
def test_kernel_size_sweep_rejects_bad_input_before_training(tmp_path, capsys, extra, needle):
    out = tmp_path / "ks"
    assert main(["sweep", "kernel-size", "--model", "resnet_tiny", *TINY_TRAIN, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_sweep_deform_cli_and_its_bad_input(tiny_checkpoints, tmp_path, capsys):
    out = tmp_path / "rot"
    assert main(["sweep", "deform", "--checkpoint", tiny_checkpoints["lr"], "--checkpoint", tiny_checkpoints["conv"],
                 "--deform", "rotate", "--strengths", "0,10", "--draws", "2", "--n", "16", "--quiet",
                 "--out", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    d = res[res["family"] == "deform"]
    assert len(d) == 2 * 2 and set(d["param_name"]) == {"degrees"}
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["sweep", "deform", "--checkpoint", tiny_checkpoints["lr"], "--deform", "twist", "--strengths", "1",
                 "--out", str(bad)]) == 2
    assert "twist" in capsys.readouterr().err
    assert not bad.exists()
