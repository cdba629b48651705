#!/usr/bin/env bash
# The GPU part of the performance issue (issue 15) in one prepared run, sized for a lent device's 15 minutes
# (the start included): each step runs under its own time limit (9 minutes if every one ran to its limit)
# and even when an earlier one fails, so one run brings back whatever finished. Prepare here with
# `bash analyses/gpu_wheels.sh`, then, with the device tool:
#     run(command="bash analyses/gpu_perf_check.sh", carry=[".whl"], timeout_s=570)
# Record the figures in reports/benchmarks.md with this command. Not yet run on a GPU: tested only by its CPU
# dry run (tests/test_gpu_check_script.py) in a venv holding what the device image holds plus the wheels.
#   1. the Triton-kernel tests (-m gpu) against the reference, fp32, bf16 and fp64;
#   2. the layer bench on CUDA (Triton vs shift vs reference, copy bandwidth and the forward's fraction of
#      it), at the bench's default shape and at a roofline shape, fp32 and bf16;
#   3. the model-level PGD-step ratio (lrnet26_cifar vs resnet26_cifar, with the floor model) and one training
#      step of lrnet26 vs resnet26 at 224 px, batch 64 (fp32, and bf16 autocast);
#   4. `robustbench-lr demo --device cuda` end to end.
# Output: $OUT (the device tool's folder; runs/gpu_check here) gets log.txt (everything printed), the CSVs
# and the demo's results.csv and report.pdf: 8 files at most, as the device tool brings back.
# SMOKE=1 shrinks every step (for a CPU dry run of the script itself: DEVICE=cpu SMOKE=1).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
DEMO_OUT=${DEMO_OUT:-/tmp/rblr_demo}  # outside $OUT: the device tool brings back 8 files at most
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WHEELS=${WHEELS-.whl}  # the carried wheels (analyses/gpu_wheels.sh); WHEELS= skips them (a dry run in a full venv)
if [ -n "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
exec > >(tee -a "$OUT/log.txt") 2>&1
step() {  # step NAME SECONDS CMD...: run CMD under a time limit, report its status, go on either way
    local name=$1 limit=$2; shift 2
    echo; echo "===== $name (limit ${limit}s): $*"; local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@"; local rc=$?
    echo "===== $name: exit $rc after $((SECONDS - t0)) s"
}
echo "date: $(date -u +%FT%TZ)  commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  device: $DEVICE  smoke: $SMOKE"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
$PY -c "import importlib.metadata as m; print('triton', m.version('triton'))" 2>/dev/null || echo "triton: not installed"

if [ "$SMOKE" = 1 ]; then
    LAYER=(--kernel-sizes 3 --shape 2,16,8,8 --rounds 2 --calls 1); ROOF=(--kernel-sizes 3 --shape 4,16,8,8 --rounds 2 --calls 1)
    ATTACK=(--configs 0.25x4 --tiny "" --rounds 2 --steps 1); TRAIN=(--pair lrnet_tiny,resnet_tiny --batch 4 --rounds 2)
    DEMO=(--n-examples 40 --epochs 1 --train-limit 300 --draws 2 --check-n 16); IMPLS=auto,reference; ROOF_IMPLS=auto,reference
    XDIST=()
else
    LAYER=(--kernel-sizes 7,3); ROOF=(--kernel-sizes 7 --shape 256,64,32,32)
    ATTACK=(--configs 1x64,1x256,0.25x256 --tiny 256 --rounds 10 --rounds-full-width 10 --steps 5)
    TRAIN=(--pair lrnet26,resnet26 --size 224 --batch 64 --rounds 10)
    DEMO=(); IMPLS=triton,shift,reference; ROOF_IMPLS=triton,reference
    XDIST=(-n 8)  # pytest-xdist is on the device image: the Triton compiles of the 25 cases run in parallel
fi

# 1. kernel correctness on the GPU, before any figure is trusted
step "1 Triton tests vs reference" 120 $PY -m pytest -q -m gpu -p no:cacheprovider "${XDIST[@]}" tests/test_lr_triton.py
# 2. the layer (aggregation and whole module) vs the reference and convolutions, copy bandwidth
step "2a layer bench fp32" 50 $PY -m robustbench_lr.bench layer --device "$DEVICE" --impls "$IMPLS" "${LAYER[@]}" --csv "$OUT/layer_fp32.csv"
step "2b layer bench roofline shape" 35 $PY -m robustbench_lr.bench layer --device "$DEVICE" --impls "$ROOF_IMPLS" --no-layer --modes forward,input_grad "${ROOF[@]}" --csv "$OUT/layer_roofline.csv"
[ "$DEVICE" = cuda ] && step "2c layer bench bf16" 25 $PY -m robustbench_lr.bench layer --device "$DEVICE" --dtype bfloat16 --impls triton --kernel-sizes 7 --modes forward,input_grad
# 3. what users pay: one PGD step and one training step, LR-Net vs ResNet
step "3a PGD step" 90 $PY -m robustbench_lr.bench attack --device "$DEVICE" --floor "${ATTACK[@]}" --csv "$OUT/attack.csv"
step "3b training step fp32" 40 $PY -m robustbench_lr.bench train --device "$DEVICE" "${TRAIN[@]}" --csv "$OUT/train.csv"
[ "$DEVICE" = cuda ] && step "3c training step bf16 autocast" 25 $PY -m robustbench_lr.bench train --device "$DEVICE" --amp "${TRAIN[@]}"
# 4. the main job end to end on the device
rm -rf "$DEMO_OUT"
step "4 demo" 150 $PY -m robustbench_lr demo --device "$DEVICE" --out "$DEMO_OUT" "${DEMO[@]}"
for f in results.csv report.pdf; do
    found=$(find "$DEMO_OUT" -name "$f" -print -quit 2>/dev/null)
    [ -n "$found" ] && cp "$found" "$OUT/demo_$f"
done
echo; echo "files in $OUT:"; ls -l "$OUT"
