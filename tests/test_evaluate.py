"""`robustbench-lr evaluate`: files, tables, resume, bad input and torchrun sharding."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from robustbench_lr.cli import main

FAST = ["--eps", "0,0.1,0.3", "--steps", "5", "--n", "48", "--check-n", "16", "--batch-size", "48", "--quiet"]


def _ev(tiny, out, *extra):
    return main(["evaluate", "--checkpoint", tiny["conv"], "--checkpoint", tiny["lr"], "--attack", "fgsm",
                 "--attack", "pgd", *FAST, "--out", str(out), *extra])


def test_evaluate_writes_tidy_tables_and_resumes(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ev"
    assert _ev(tiny_checkpoints, out, "--save-adv") == 0
    printed = capsys.readouterr().out
    assert "robust accuracy" in printed and "hygiene checks" in printed
    res = pd.read_csv(out / "results.csv")
    sweeps = res[res["attack"].isin(["fgsm", "pgd"])]
    assert len(sweeps) == 2 * 2 * 3  # models x attacks x eps
    assert set(res["attack"]) == {"fgsm", "pgd", "clean", "worst-case"}
    for col in ("model_name", "model_kwargs", "checkpoint_sha256", "dataset", "split", "n_total", "n_correct",
                "accuracy", "ci_low", "ci_high", "steps", "restarts", "targeted", "seconds", "grad_evals"):
        assert col in res.columns, col
    assert (res["n_total"] == 48).all() and (res["ci_low"] <= res["accuracy"]).all()
    assert (res["accuracy"] <= res["ci_high"]).all()
    assert res["accuracy"].dtype.kind == "f" and res["eps"].dtype.kind == "f"
    # worst-case is never above any single attack
    for (m, e), g in res[res["attack"] != "clean"].groupby(["model", "eps"]):
        wc = g[g["attack"] == "worst-case"]["n_correct"].iloc[0]
        assert wc <= g[g["attack"] != "worst-case"]["n_correct"].min()
    paired = pd.read_csv(out / "paired.csv")
    assert {"model_a", "model_b", "a_only", "b_only", "mcnemar_p"} <= set(paired.columns)
    assert paired["mcnemar_p"].between(0, 1).all()
    hyg = pd.read_csv(out / "hygiene.csv")
    assert set(hyg["status"]) <= {"pass", "warn", "fail"} and {"conv", "lr"} == set(hyg["model"])
    outc = pd.read_csv(out / "outcomes.csv")
    assert len(outc) == 2 * 3 * 48 and {"min_eps", "clean_correct", "dataset_index"} <= set(outc.columns)  # + worst case
    assert set(outc["attack"]) == {"fgsm", "pgd", "worst-case"}
    run = json.loads((out / "run.json").read_text())
    assert run["eps"] == [0.0, 0.1, 0.3] and run["command"].startswith("robustbench-lr evaluate")
    assert list((out / "adv").glob("*.safetensors"))
    # a re-run of the same command attacks nothing: every cell comes from the saved state
    import robustbench_lr.runners.eps_sweep as sweep

    def no_attacks(*a, **k):
        raise AssertionError("a finished cell was attacked again")

    monkeypatch.setattr(sweep, "build_attack", no_attacks)
    before = pd.read_csv(out / "results.csv")
    assert _ev(tiny_checkpoints, out) == 0
    after = pd.read_csv(out / "results.csv")
    cols = ["model", "attack", "eps", "n_correct"]
    assert before[cols].equals(after[cols])


@pytest.mark.parametrize("args,needle", [
    (["--eps", "0,-0.1"], "eps must be >= 0"),
    (["--eps", "0,1.5"], "larger than the largest possible perturbation"),
    (["--attack", "pgdd"], "Did you mean 'pgd'"),
    (["--norm", "l3"], "unknown norm"),
    (["--dataset", "cifar10"], "not on --dataset"),
    (["--n", "5000"], "1000 examples"),
    (["--attack", "fgsm", "--norm", "l2"], "linf only"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tiny_checkpoints, tmp_path, args, needle):
    out = tmp_path / "never"
    base = ["--checkpoint", tiny_checkpoints["conv"], "--steps", "2", "--n", "16", "--quiet", "--out", str(out)]
    if "--attack" not in args:
        base += ["--attack", "pgd"]
    res = subprocess.run([sys.executable, "-m", "robustbench_lr", "evaluate", *base, *args], capture_output=True,
                         text=True, env=dict(os.environ, KINETO_LOG_LEVEL="5"))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_missing_checkpoint_is_a_user_error(tmp_path):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_torchrun_sharded_evaluation_equals_single_process(tiny_checkpoints, tmp_path):
    args = ["evaluate", "--checkpoint", tiny_checkpoints["conv"], "--checkpoint", tiny_checkpoints["lr"], "--attack",
            "fgsm", "--attack", "pgd", "--no-random-start", "--eps", "0,0.1,0.2", "--steps", "5", "--n-examples", "40",
            "--no-hygiene", "--quiet", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", KINETO_LOG_LEVEL="5")
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, "-m", "robustbench_lr", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                          "robustbench_lr", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    cols = ["model", "attack", "eps", "n_total", "n_clean_correct", "n_correct", "grad_evals"]
    a = pd.read_csv(tmp_path / "one" / "results.csv")[cols]
    b = pd.read_csv(tmp_path / "two" / "results.csv")[cols]
    pd.testing.assert_frame_equal(a, b)
    oa = pd.read_csv(tmp_path / "one" / "outcomes.csv")
    ob = pd.read_csv(tmp_path / "two" / "outcomes.csv")
    pd.testing.assert_frame_equal(oa, ob)
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
