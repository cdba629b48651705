"""`robustbench-lr models` and the CLI's error contract (one line, exit 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys

from robustbench_lr.cli import main


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("lrnet26", "resnet26", "lrnet_tiny", "resnet_tiny", "lrnet26_cifar"):
        assert name in out
    assert "GMACs" in out and "params_M" in out


def test_models_pattern_and_kernel_size(capsys):
    assert main(["models", "lrnet_t*", "--kernel-size", "5"]) == 0
    out = capsys.readouterr().out
    assert "lrnet_tiny" in out and "resnet" not in out.split("GMACs:")[0]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustbench_lr", *args], capture_output=True, text=True)


def test_user_error_is_one_line_without_traceback():
    res = _run("models", "--kernel-size", "4")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "kernel_size" in lines[0]


def test_no_match_is_an_error():
    res = _run("models", "nosuchmodel*")
    assert res.returncode == 2 and "no model matches" in res.stderr
