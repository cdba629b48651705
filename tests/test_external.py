"""Any model in: `benchmark()` on an nn.Module, `evaluate --external` with weights files, the minimal-norm sweep and
the attack sanity flags."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from robustbench_lr.cli import main

HERE = os.path.dirname(__file__)


def small_cnn() -> nn.Module:
    """A plain CNN on 1x28x28 [0, 1] images (the factory `--external test_external:small_cnn` builds)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10))


def seven_outputs() -> nn.Module:
    """A factory whose model returns (N, 7) logits on 1x28x28 images (mnist5k has 10 classes); in train mode."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))


def raising_factory() -> nn.Module:
    """A factory that raises when called (e.g. it needs weights that are not there)."""
    raise RuntimeError("no pretrained weights in this sandbox\nsecond line of the message")


@pytest.fixture(scope="module")
def trained_cnn() -> nn.Module:
    from robustbench_lr.data import load_dataset

    m = small_cnn()
    tr = load_dataset("mnist5k", "train")
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x, y = tr.batch(torch.randint(0, len(tr), (64,), generator=g))
        loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def test_benchmark_any_module_returns_rows_with_intervals(trained_cnn, caplog):
    from robustbench_lr import benchmark

    trained_cnn.train()
    tables = benchmark(trained_cnn, dataset="mnist5k", eps=[0.05, 0.1], attacks=("pgd", "fmn"), n=40, n_check=16,
                       name="cnn", steps=10, min_norm_steps=10)
    assert any("training mode" in r.message for r in caplog.records)
    r = tables.results
    assert {"clean", "pgd", "fmn", "worst-case"} == set(r["attack"])
    assert (r["ci_low"] <= r["accuracy"]).all() and (r["accuracy"] <= r["ci_high"]).all()
    assert r.loc[r["attack"] == "clean", "accuracy"].iloc[0] > 0.5
    assert (r["model"] == "cnn").all() and r["external"].all()
    fmn = r[r["attack"] == "fmn"].sort_values("eps")
    assert fmn["n_correct"].is_monotonic_decreasing and fmn["grad_evals"].iloc[0] > 0
    o = tables.outcomes[tables.outcomes["attack"] == "fmn"]
    for e in (0.05, 0.1):  # every eps row is read off the per-example norms of one run
        assert int((o["min_norm"] > e).sum()) == int(fmn.loc[np.isclose(fmn["eps"], e), "n_correct"].iloc[0])
    assert {"deterministic", "minimal_norm_vs_pgd"} <= set(tables.hygiene["check"])


def test_benchmark_wraps_normalisation(trained_cnn):
    from robustbench_lr import benchmark

    class Expects(nn.Module):  # a model trained on normalised inputs
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner(z * 0.3081 + 0.1307)

    t = benchmark(Expects(trained_cnn), eps=[0.1], attacks=("pgd",), n=32, hygiene=False, steps=5,
                  normalize=((0.1307,), (0.3081,)))
    ref = benchmark(trained_cnn, eps=[0.1], attacks=("pgd",), n=32, hygiene=False, steps=5)
    assert t.results["n_correct"].tolist() == ref.results["n_correct"].tolist()


def _external_args(weights: str, name: str) -> list[str]:
    return ["--external", "test_external:small_cnn", "--weights", weights, "--name", name]


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_evaluate_external_weights_next_to_a_checkpoint(trained_cnn, tiny_checkpoints, tmp_path, monkeypatch, fmt):
    monkeypatch.syspath_prepend(HERE)
    w = tmp_path / f"cnn.{fmt}"
    if fmt == "pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in trained_cnn.state_dict().items()}}, w)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in trained_cnn.state_dict().items()}, str(w))
    out = tmp_path / "ev"
    code = main(["evaluate", "--checkpoint", tiny_checkpoints["conv"], *_external_args(str(w), "mycnn"),
                 "--attack", "pgd", "--eps", "0,0.1", "--steps", "5", "--n", "32", "--check-n", "16", "--quiet",
                 "--out", str(out)])
    assert code == 0
    res = pd.read_csv(out / "results.csv")
    assert set(res["model"]) == {"conv", "mycnn"}
    ext = res[res["model"] == "mycnn"]
    assert ext["external"].all() and (ext["training_method"] == "external").all()
    paired = pd.read_csv(out / "paired.csv")
    assert {("conv", "mycnn")} == set(zip(paired["model_a"], paired["model_b"]))
    import json

    run = json.loads((out / "run.json").read_text())
    assert run["checkpoints"]["mycnn"]["factory"] == "test_external:small_cnn"
    assert len(run["checkpoints"]["mycnn"]["sha256"]) == 64


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _err(capsys, code: int, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_external_bad_input(trained_cnn, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(HERE)
    base = ["evaluate", "--dataset", "mnist5k", "--n", "16", "--quiet", "--out", str(tmp_path / "never")]
    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    evil.write_bytes(pickle.dumps(_Evil(str(marker))))
    _err(capsys, main([*base, *_external_args(str(evil), "x")]), "refused")
    assert not marker.exists()
    _err(capsys, main([*base, "--external", "no_such_module_xyz:f"]), "cannot import")
    wrong = tmp_path / "wrong.pt"
    torch.save({k: torch.zeros(3) if k == "0.weight" else v for k, v in trained_cnn.state_dict().items()}, wrong)
    _err(capsys, main([*base, *_external_args(str(wrong), "x")]), "'0.weight'")
    _err(capsys, main([*base, "--external", "torchvision:resnet18"]), "failed on a batch")  # digits, RGB net
    assert not (tmp_path / "never").exists()


def test_broken_factories_and_wrong_outputs_are_one_line_errors(tmp_path, monkeypatch, capsys, caplog):
    """A module that raises at import (any exception), a factory that raises, an output of the wrong shape: one
    line naming the factory and the first line of the error, exit 2; the factory's train mode is not warned about."""
    monkeypatch.syspath_prepend(HERE)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "i13_name_error.py").write_text("WIDTH = undefined_width_xyz * 2\n")
    (tmp_path / "i13_syntax_error.py").write_text("def small_cnn(:\n    pass\n")
    base = ["evaluate", "--dataset", "mnist5k", "--n", "16", "--quiet", "--out", str(tmp_path / "never")]
    cases = [("i13_name_error:f", "'i13_name_error:f': importing 'i13_name_error' failed (NameError: name "
                                  "'undefined_width_xyz' is not defined)"),
             ("i13_syntax_error:small_cnn", "importing 'i13_syntax_error' failed (SyntaxError:"),
             ("test_external:raising_factory", "'test_external:raising_factory': the factory raised RuntimeError: "
                                               "no pretrained weights in this sandbox."),
             ("test_external:seven_outputs", "returned (2, 7) for a batch of (2, 1, 28, 28); it must return logits "
                                             "of shape (N, 10)")]
    for factory, needle in cases:
        caplog.clear()
        _err(capsys, main([*base, "--external", factory]), needle)
        assert not [r for r in caplog.records if "training mode" in r.getMessage()], factory
    assert not (tmp_path / "never").exists()


def test_an_external_error_is_exactly_one_line_on_the_terminal(tmp_path):
    """The real CLI (its own logging set-up): the factory's train mode adds no warning line before the error."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "robustbench_lr", "evaluate", "--external",
                          "test_external:seven_outputs", "--dataset", "mnist5k", "--n", "8", "--quiet", "--out",
                          str(tmp_path / "never")],
                         capture_output=True, text=True, timeout=300, env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "must return logits of shape (N, 10)" in lines[0], res.stderr
    assert res.stdout == ""


def test_sanity_flags_fire_on_an_attack_that_returns_its_input(trained_cnn, monkeypatch):
    import robustbench_lr.runners.eps_sweep as sweep
    from robustbench_lr import benchmark

    class Lazy:
        whole_set, flags, refused, grad_evals, forwards = False, [], "", None, None

        def __call__(self, x, y, targets=None, ids=None):
            return x.clone()

    monkeypatch.setattr(sweep, "build_attack", lambda *a, **k: Lazy())
    t = benchmark(trained_cnn, eps=[0.1], attacks=("pgd",), n=24, n_check=8, steps=5)
    h = t.hygiene.set_index("check")
    assert h.loc["attack_unchanged", "status"] == "fail"
    assert h.loc["attack_no_backward", "status"] == "fail"
    assert h.loc["attack_no_success", "status"] == "warn"

