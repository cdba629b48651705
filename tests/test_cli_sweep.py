"""`robustbench-lr sweep kernel-size` and `sweep deform` end to end at tiny sizes, and their bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

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


def test_kernel_size_reads_each_model_json_once_per_seed(tiny_checkpoints, tmp_path, monkeypatch):
    """Issue 11: the evaluation and the deformation plans of a seed share one `checkpoint_sources` call, and the
    checkpoints live where `results.rundir.checkpoint_dir` says."""
    import robustbench_lr.checkpoint as ck
    from robustbench_lr.results.rundir import CHECKPOINTS_DIR, checkpoint_dir
    from robustbench_lr.results.store import FileStore
    from robustbench_lr.runners.deform import DeformRequest
    from robustbench_lr.runners.kernel_size import (KernelSizeConfig, KernelSizePlan, TrainJob, kernel_size_rows,
                                                    plan_kernel_size)

    cfg = KernelSizeConfig(models=("resnet_tiny",), kernel_sizes=(3, 5), seeds=(0,), attacks=("pgd",), eps=(0.0, 0.1),
                           steps=1, hygiene=False, requests=(DeformRequest("rotate", (0.0, 10.0), draws=1),), n=8,
                           batch_size=8, device="cpu", train={"epochs": 1})
    planned = plan_kernel_size(cfg, tmp_path)
    assert [j.out for j in planned.jobs] == [checkpoint_dir(tmp_path, f"resnet_tiny_k{k}_s0") for k in (3, 5)]
    assert all(j.out.parent.name == CHECKPOINTS_DIR for j in planned.jobs)
    jobs = [TrainJob("m", 3, 0, None, tiny_checkpoints[lab]) for lab in ("conv", "lr")]  # already trained
    calls = []
    real = ck.read_meta
    monkeypatch.setattr(ck, "read_meta", lambda p, *a, **k: calls.append(str(p)) or real(p, *a, **k))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine (see tests/test_viz.py)
    try:
        rows = list(kernel_size_rows(KernelSizePlan(cfg, jobs, [0.0, 0.1]), FileStore(tmp_path / "state")))
    finally:
        torch.set_num_threads(threads)
    assert {r.values.get("family") for r in rows if r.table == "results"} >= {"clean", "linf", "deform"}
    assert sorted(calls) == sorted(tiny_checkpoints[lab] for lab in ("conv", "lr"))  # once each
