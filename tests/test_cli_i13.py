"""Issue 13's command-line and config gaps: --min-norm-steps apart from --steps, --aa-few-classes reaching official
AutoAttack (refused at plan time, or the documented fallback), the attack named in the hygiene summary, and
`sweep deform --external`."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from robustbench_lr.cli import build_parser, main
from robustbench_lr.errors import UserError

HERE = os.path.dirname(__file__)


def _config(*extra: str):
    from robustbench_lr.cli.evaluate import config_from

    return config_from(build_parser().parse_args(["evaluate", "--checkpoint", "x", "--out", "o", *extra]))


def test_steps_do_not_weaken_minimal_norm_attacks():
    from robustbench_lr.attacks.minimal_norm import DEFAULT_STEPS

    specs = {s.name: s for s in _config("--attack", "pgd", "--attack", "fmn", "--steps", "5").specs()}
    assert specs["pgd"].steps == 5 and specs["fmn"].steps == DEFAULT_STEPS["fmn"] == 1000
    specs = {s.name: s for s in _config("--attack", "pgd", "--attack", "ddn", "--norm", "l2",
                                        "--min-norm-steps", "300").specs()}
    assert specs["pgd"].steps == 20 and specs["ddn"].steps == 300
    # what run.json and the results rows record
    s = specs["ddn"].settings(0.5)
    assert s["steps"] == 300 and "'steps': 300" in s["protocol"]
    assert _config("--min-norm-steps", "300").min_norm_steps == 300
    with pytest.raises(UserError, match="--min-norm-steps must be a positive integer"):
        _config("--attack", "fmn", "--min-norm-steps", "0").specs()


def test_aa_few_classes_reaches_the_spec_and_is_validated():
    cfg = _config("--attack", "autoattack", "--attack", "pgd", "--aa-few-classes", "fallback")
    assert {s.name: s.aa_few_classes for s in cfg.specs()} == {"autoattack": "fallback", "pgd": "fallback"}
    assert "aa_few_classes='fallback'" in cfg.specs()[0].settings(0.1)["protocol"]
    assert _config("--attack", "autoattack").specs()[0].aa_few_classes == "error"
    with pytest.raises(UserError, match="Did you mean 'fallback'"):
        _config("--attack", "autoattack", "--aa-few-classes", "fallbak").specs()


class ThreeClasses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(784, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture
def three_class_plan(monkeypatch):
    """plan_evaluation on a 3-class model and 8 examples whose labels are its own predictions."""
    import robustbench_lr.runners.evaluate as ev
    from robustbench_lr.runners.common import EvalSet, ModelSource

    model = ThreeClasses().eval()
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        y = model(x).argmax(1)
    meta = {"model": {"name": "three", "kwargs": {}, "family": "external"}, "weights_sha256": "0" * 64,
            "dataset": {"name": "mnist5k", "input_size": [1, 28, 28], "num_classes": 3}, "external": True}
    src = ModelSource("three", "three", meta, loader=lambda device: model)
    monkeypatch.setattr(ev, "load_eval_set", lambda srcs, d, r, n: EvalSet(
        srcs, "mnist5k", 0, [1, 28, 28], 3, np.arange(8), x, y))

    def plan(few: str):
        cfg = ev.EvalConfig(attacks=("autoattack",), eps=(0.3,), n=8, batch_size=8, device="cpu", hygiene=False,
                            aa_few_classes=few)
        return ev.plan_evaluation(cfg, sources=[src])

    return plan


def test_autoattack_on_three_classes_is_refused_before_any_attack_or_falls_back(three_class_plan):
    from robustbench_lr.results import collect
    from robustbench_lr.runners import evaluation_rows

    with pytest.raises(UserError, match="--aa-few-classes fallback") as err:
        three_class_plan("error")
    assert "aa_few_classes='fallback'" in str(err.value)
    tables = collect(evaluation_rows(three_class_plan("fallback")))
    row = tables.results[tables.results["attack"] == "autoattack"].iloc[0]
    flags = {f["check"]: f for f in json.loads(row["attack_flags"])}
    assert flags["too_few_classes"]["status"] == "warn" and "apgd-t" in flags["too_few_classes"]["detail"]
    assert "aa_few_classes='fallback'" in row["protocol"]


def test_hygiene_summary_names_the_attack(capsys):
    from robustbench_lr.cli._common import print_hygiene

    row = {"model": "conv", "check": "double_steps", "status": "fail", "value": 0.02, "threshold": 0.01, "n": 100,
           "eps": 0.1, "detail": "acc moved"}
    print_hygiene(pd.DataFrame([{**row, "attack": "fgsm-linf"}, {**row, "attack": "pgd-linf"},
                                {**row, "check": "deterministic", "attack": "", "eps": float("nan")}]))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "hygiene checks: 0 pass, 0 warn, 3 fail"
    assert "conv: double_steps [fgsm-linf] at eps 0.1" in lines[1] and "[pgd-linf]" in lines[2]
    assert len(set(lines[1:])) == 3 and "deterministic (" in lines[3]


def test_sweep_deform_takes_external_models(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(HERE)
    out = tmp_path / "rot"
    assert main(["sweep", "deform", "--external", "test_external:small_cnn", "--name", "a", "--external",
                 "test_external:small_cnn", "--name", "b", "--dataset", "mnist5k", "--deform", "rotate", "--strengths",
                 "0,10", "--draws", "1", "--n", "8", "--quiet", "--out", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    d = res[res["family"] == "deform"]
    assert set(d["model"]) == {"a", "b"} and d["external"].all() and len(d) == 4


def test_sweep_deform_needs_a_model(tmp_path, capsys):
    assert main(["sweep", "deform", "--deform", "rotate", "--out", str(tmp_path / "x")]) == 2
    assert "--checkpoint DIR or --external FACTORY" in capsys.readouterr().err
