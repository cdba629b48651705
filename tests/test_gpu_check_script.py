"""The prepared GPU script of the performance issue (analyses/gpu_perf_check.sh) runs end to end: a lent device's
minutes are few, so the script must not be the thing that fails there. Here it runs its CPU dry run (DEVICE=cpu,
SMOKE=1: every step shrunk, the Triton tests skipped) and must finish every step and leave the files the device
tool brings back (8 at most, pandas-readable CSVs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_cpu_dry_run(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, DEVICE="cpu", SMOKE="1", PYTHON=sys.executable, OUT=str(out),
               DEMO_OUT=str(tmp_path / "demo"), WHEELS="")
    res = subprocess.run(["bash", str(ROOT / "analyses" / "gpu_perf_check.sh")], env=env, capture_output=True,
                         text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    exits = [line for line in log.splitlines() if line.startswith("===== ") and ": exit " in line]
    assert len(exits) == 6, exits  # 1, 2a, 2b, 3a, 3b, 4 (2c and 3c are CUDA-only)
    assert all(": exit 0 after" in line for line in exits), exits
    files = sorted(p.name for p in out.iterdir())
    assert files == ["attack.csv", "demo_report.pdf", "demo_results.csv", "layer_fp32.csv", "layer_roofline.csv",
                     "log.txt", "train.csv"]
    assert len(files) <= 8
    for name in files:
        if name.endswith(".csv"):
            assert len(pd.read_csv(out / name)) > 0, name
    assert (out / "demo_report.pdf").read_bytes()[:5] == b"%PDF-"
