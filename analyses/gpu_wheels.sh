#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the pure-Python wheels that robustbench-lr needs and that the lent GPU
# machine's image lacks (it has torch, triton, numpy, scipy, pandas, matplotlib, safetensors, tqdm,
# scikit-learn, pillow, requests, tabulate, pytest; it reaches no package index). Run here, before
# analyses/gpu_perf_check.sh is sent there with `carry: [".whl"]`. About 48 MB, under the 64 MiB the
# working tree may take along with it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
rm -rf .whl && mkdir -p .whl
# Pure-Python wheels from the index (py3-none-any), for any Python 3 on the device.
$PY -m pip download --no-deps --only-binary=:all: -d .whl \
    mlxtend torchattacks pyautoattack adv-lib captum reportlab websocket-client
# visdom (imported by adv_lib.attacks) ships only an sdist: build its wheel here (pure Python).
PIP_CONSTRAINT="$PWD/constraints.txt" $PY -m pip wheel --no-deps -w .whl visdom
ls -l .whl
du -sh .whl
