"""Every fault a new user can make gets one line, exit 2, nothing half-written, and is refused before any
training or attacking; plus the file contract (permissions, headers, hashes) and quiet progress off a terminal."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from robustbench_lr.cli import main


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if anything trains or attacks."""
    import robustbench_lr.runners.eps_sweep as sweep
    import robustbench_lr.training.loop as loop

    def boom(*a, **k):
        raise AssertionError("work started before the input was refused")

    monkeypatch.setattr(loop, "_setup", boom)
    monkeypatch.setattr(sweep, "build_attack", boom)
    return boom


def _one_line_error(capsys, code: int, needle: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "Traceback" not in err[0] and needle in err[0], err


def _blocked(tmp_path):
    """An --out that cannot be created, also for root: its parent is an existing file."""
    f = tmp_path / "a_file"
    f.write_text("x")
    return f / "out"


def test_unwritable_out_is_refused_before_any_work(tiny_checkpoints, tmp_path, capsys, no_work):
    out = str(_blocked(tmp_path))
    ck = tiny_checkpoints["conv"]
    commands = [
        ["train", "--model", "resnet_tiny", "--epochs", "1", "--out", out],
        ["evaluate", "--checkpoint", ck, "--n", "16", "--out", out],
        ["sweep", "deform", "--checkpoint", ck, "--deform", "rotate", "--n", "16", "--out", out],
        ["sweep", "kernel-size", "--model", "resnet_tiny", "--kernel-sizes", "3", "--n", "16", "--out", out],
        ["demo", "--out", out, "--n", "16"],
        ["visualize", "--checkpoint", ck, "--out", out + "/fig.png"],
        ["report", ck, "-o", out + "/r.pdf"],
    ]
    for argv in commands:
        code = main(argv)
        _one_line_error(capsys, code, "a_file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_report_of_a_checkpoint_dir_names_what_it_wants(tiny_checkpoints, tmp_path, capsys):
    _one_line_error(capsys, main(["report", tiny_checkpoints["conv"], "-o", str(tmp_path / "r.pdf")]), "results.csv")
    assert not (tmp_path / "r.pdf").exists()


def test_demo_checks_n_and_out_before_training(tmp_path, capsys, no_work):
    _one_line_error(capsys, main(["demo", "--n", "5000", "--out", str(tmp_path / "d")]), "1000 examples")
    assert not (tmp_path / "d").exists()
    f = tmp_path / "file"
    f.write_text("keep me")
    _one_line_error(capsys, main(["demo", "--out", str(f)]), "not a directory")
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("drop", ["dataset", "model"])
def test_model_json_missing_a_required_key(tiny_checkpoints, tmp_path, capsys, no_work, drop):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints["conv"], ck)
    meta = json.loads((ck / "model.json").read_text())
    del meta[drop]
    (ck / "model.json").write_text(json.dumps(meta))
    code = main(["evaluate", "--checkpoint", str(ck), "--n", "16", "--out", str(tmp_path / "ev")])
    _one_line_error(capsys, code, f"lacks the required key '{drop}'")
    assert not (tmp_path / "ev").exists()


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["truncated", "garbage", "pickle"])
def test_bad_last_pt_is_refused_with_resume(tmp_path, capsys, monkeypatch, kind):
    from robustbench_lr.training import TrainConfig, fit

    out = tmp_path / "run"
    cfg = TrainConfig(model="resnet_tiny", epochs=2, batch_size=32, train_limit=64, model_kwargs={"width": 0.25},
                      device="cpu")
    fit(cfg, out, progress=False, stop_after=1)
    last = out / "last.pt"
    marker = tmp_path / "pwned"
    if kind == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    elif kind == "garbage":
        last.write_bytes(b"not a checkpoint at all")
    else:
        last.write_bytes(pickle.dumps(_Evil(str(marker))))
    import robustbench_lr.training.loop as loop

    monkeypatch.setattr(loop, "_setup", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    code = main(["train", "--model", "resnet_tiny", "--epochs", "2", "--batch-size", "32", "--train-limit", "64",
                 "--width", "0.25", "--device", "cpu", "--out", str(out), "--resume"])
    _one_line_error(capsys, code, "last.pt")
    assert not marker.exists()  # the pickle's code never ran


def test_bad_last_pt_message_says_how_to_restart(tmp_path):
    from robustbench_lr.errors import UserError
    from robustbench_lr.training import TrainConfig
    from robustbench_lr.training.state import load_last

    (tmp_path / "last.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="without --resume"):
        load_last(tmp_path / "last.pt", TrainConfig(model="resnet_tiny"))


@pytest.mark.parametrize("eps,needle", [("2", "larger than the largest possible"), ("-0.1", "eps must be >= 0"),
                                        ("0.1,0.2", "one value")])
def test_visualize_validates_eps_like_evaluate(tiny_checkpoints, tmp_path, capsys, no_work, eps, needle):
    out = tmp_path / "f.png"
    code = main(["visualize", "--checkpoint", tiny_checkpoints["lr"], "--kind", "shift", "--eps", eps,
                 "--out", str(out)])
    _one_line_error(capsys, code, needle)
    assert not out.exists()


# Runs the console entry point (`cli.run`) and prints "ready" once it has installed its start-up Ctrl-C handler,
# so the test interrupts a process that is still starting (parsing, importing torch and the model zoo) whatever
# the machine's load, instead of guessing how long Python takes to get there.
_STARTING = """
import signal, sys
from robustbench_lr import cli
_signal = signal.signal
def _spy(sig, handler):
    previous = _signal(sig, handler)
    if handler is cli._interrupted_while_starting:
        print("ready", flush=True)
    return previous
signal.signal = _spy
sys.argv = ["robustbench-lr", "models"]
cli.run()
"""


def _interrupt_while_starting(delay: float) -> subprocess.CompletedProcess | None:
    """SIGINT `delay` s after the start-up handler is in place; None when the command finished first."""
    proc = subprocess.Popen([sys.executable, "-c", _STARTING], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=60)
        time.sleep(delay)
        if proc.poll() is not None:  # finished before it could be interrupted: try again, earlier
            proc.communicate(timeout=60)
            return None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_while_starting_is_one_line():
    for delay in (0.2, 0.0):  # inside the imports of torch and the model zoo; then right after the handler
        res = _interrupt_while_starting(delay)
        if res is not None:
            break
    assert res is not None, "the command finished before it could be interrupted"
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 130 and res.stderr.strip().splitlines() == ["robustbench-lr: interrupted"], res.stderr


def test_weights_hash_depends_on_the_tensors_only():
    from robustbench_lr.checkpoint import weights_sha256

    a = {"b": torch.arange(6.0).view(2, 3), "a": torch.ones(3, dtype=torch.float64)}
    b = {"a": torch.ones(3, dtype=torch.float64), "b": torch.arange(6.0).view(2, 3).t().contiguous().t()}
    assert weights_sha256(a) == weights_sha256(b)
    c = dict(a, b=a["b"].clone())
    c["b"][0, 0] = 1e-7
    assert weights_sha256(c) != weights_sha256(a)
    assert weights_sha256({"x": torch.zeros(2)}) != weights_sha256({"x": torch.zeros(2, dtype=torch.float64)})


def test_files_get_the_umask_mode_and_empty_tables_their_header(tmp_path):
    from robustbench_lr.report import build_report
    from robustbench_lr.results import collect, write_run
    from robustbench_lr.results.table import COLUMNS, Row
    from robustbench_lr.training import TrainConfig, fit

    old = os.umask(0o022)
    try:
        fit(TrainConfig(model="resnet_tiny", epochs=1, batch_size=32, train_limit=64, model_kwargs={"width": 0.25},
                        device="cpu"), tmp_path / "ck", progress=False)
        tables = collect([Row("results", {"model": "m", "family": "clean", "perturbation": "clean", "n_total": 4,
                                          "n_correct": 3})])
        write_run(tmp_path / "run", tables, {"command": "test"})
        build_report([tmp_path / "run"], tmp_path / "rep" / "report.pdf")  # a one-row run makes a tiny report
    finally:
        os.umask(old)
    for p in [tmp_path / "ck" / "model.safetensors", tmp_path / "ck" / "model.json", tmp_path / "run" / "results.csv",
              tmp_path / "rep" / "report.pdf"]:
        assert p.stat().st_mode & 0o777 == 0o644, p
    for name in ("paired", "hygiene", "outcomes"):
        df = pd.read_csv(tmp_path / "run" / f"{name}.csv")  # no EmptyDataError
        assert df.empty and list(df.columns) == COLUMNS[name]


def test_progress_off_a_terminal_is_one_line_per_epoch(tmp_path):
    code = ("from robustbench_lr.cli import run; import sys; sys.argv = ['robustbench-lr', 'train', '--model', "
            f"'resnet_tiny', '--epochs', '2', '--batch-size', '16', '--train-limit', '96', '--width', '0.25', "
            f"'--device', 'cpu', '--out', {str(tmp_path / 'r')!r}]; run()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and all("6/6 batch" in ln for ln in lines), res.stderr
    assert "\r" not in res.stderr


@pytest.mark.parametrize("argv", [["demo", "--eps", "0.1"], ["train", "--model", "resnet_tiny", "--out", "x", "--ep", "2"],
                                  ["sweep", "kernel-size", "--model", "lrnet_tiny", "--eps-warm", "1", "--out", "x"]])
def test_abbreviated_options_are_refused_not_guessed(argv, tmp_path, capsys, no_work, monkeypatch):
    """argparse would take `demo --eps` for `--eps-warmup-epochs`: every command refuses abbreviations instead."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
