#!/usr/bin/env bash
# Why does a clean-trained LR-Net break at tiny eps on MNIST? An ablation the suite runs itself.
#
# Hypothesis (from an audit): LR aggregation is a softmax (non-negative weights summing to 1), so it passes a
# uniform offset through unchanged; the LR stem (a 1x1 conv, then LR) cannot cancel a brightness offset on the
# exactly-zero background, a 3x3 conv stem can. Tested with two training seeds per variant (clean training, the
# demo recipe, EPOCHS epochs), all evaluated on the same N held-out digits:
#   lr         lrnet_tiny as it is (1x1 + LR stem, squared-difference appearance, masked borders, 7x7)
#   lr_convstem lrnet_tiny with a 3x3 conv stem (everything else LR)            -> is it the stem?
#   lr_fixed   lrnet_tiny without the appearance term (softmax of a learned, input-independent prior: a fixed
#              positive kernel that sums to 1)                                    -> is it the pairwise term?
#   lr_temp4   lrnet_tiny with logit temperature 4 (appearance logits x 1/4: flatter weights)
#   lr_zeros   lrnet_tiny with zero-padded borders instead of masked ones
#   conv       resnet_tiny (3x3 convolutions), the reference
# Measurements: clean accuracy; PGD-20 at eps 0.01, 0.02, 0.05 on every pixel, on the background pixels only
# (clean value 0) and on the stroke pixels only (--mask); a uniform brightness offset of 0.01, 0.02, 0.05
# (every pixel + c, clipped); the input-gradient norms of each model (figure). Paired McNemar tests on the same
# examples within each seed; intervals over seeds in the summary.
#
# Regenerates reports/lr_fragility/ (about an hour on 2 CPU cores):
#   bash analyses/lr_fragility_mnist5k.sh
set -euo pipefail
# One torch / OpenMP thread per process: results are bit-identical only at the same thread count (README, "What
# reproduces"), and two analyses can then share a 2-core machine. The committed report was made this way.
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/analyses/lr_fragility}
EPOCHS=${EPOCHS:-10}
N=${N:-500}
train() {  # name seed model args...
    local name=$1 seed=$2; shift 2
    robustbench-lr train --dataset mnist5k --epochs "$EPOCHS" --seed "$seed" --quiet --resume \
        --out "$OUT/checkpoints/${name}_s${seed}" "$@"
}
for s in 0 1; do
    train lr "$s" --model lrnet_tiny
    train lr_convstem "$s" --model lrnet_tiny --model-arg stem_spatial='"conv"' --model-arg stem_kernel_size=3
    train lr_fixed "$s" --model lrnet_tiny --appearance none
    train lr_temp4 "$s" --model lrnet_tiny --model-arg temperature=4
    train lr_zeros "$s" --model lrnet_tiny --border zeros
    train conv "$s" --model resnet_tiny
done
for s in 0 1; do
    CKS=()
    for d in "$OUT"/checkpoints/*_s"$s"; do CKS+=(--checkpoint "$d"); done
    for mask in all background foreground; do
        MASK=(); [ "$mask" != all ] && MASK=(--mask "$mask")
        robustbench-lr evaluate "${CKS[@]}" --attack pgd "${MASK[@]}" --eps 0,0.01,0.02,0.05 --steps 20 \
            --n "$N" --check-n 100 --quiet --out "$OUT/s$s/pgd_$mask"
    done
    robustbench-lr sweep deform "${CKS[@]}" --deform offset=0,0.01,0.02,0.05 --n-examples "$N" --quiet --out "$OUT/s$s/offset"
done
python analyses/lr_fragility_figures.py "$OUT" --n "$N"
robustbench-lr report "$OUT"/s0/pgd_all "$OUT"/s0/pgd_background "$OUT"/s0/pgd_foreground "$OUT"/s0/offset \
    "$OUT"/s1/pgd_all "$OUT"/s1/pgd_background "$OUT"/s1/pgd_foreground "$OUT"/s1/offset "$OUT"/gradients \
    -o "$OUT/report.pdf"
mkdir -p reports/lr_fragility && rm -rf reports/lr_fragility/report_tables  # README.md (the findings) is kept
cp "$OUT"/report.pdf "$OUT"/summary.csv "$OUT"/summary.md reports/lr_fragility/
cp -r "$OUT"/report_tables reports/lr_fragility/

# The question for a GPU run (not run by us): does the effect survive on natural images, where there is no
# blank background? The same variants on CIFAR-10:
#   robustbench-lr train --model lrnet26_cifar --width 0.5 --dataset cifar10 --data-root /data/cifar10 \
#       --epochs 60 --device cuda --model-arg stem_spatial='"conv"' --out runs/analyses/lr_fragility_cifar/convstem
