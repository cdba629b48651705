#!/usr/bin/env bash
# Kernel-size sweep at demo scale: lrnet_tiny and resnet_tiny with k = 3, 5, 7, 9, three training seeds each,
# on the embedded mnist5k (4,000 train / 1,000 held out, split seed 0). For every (model, k, seed) it trains (or
# reuses a finished checkpoint), then measures on the same 500 held-out digits:
#   clean accuracy; PGD-20 (Linf) robust accuracy at eps 0.02, 0.05, 0.1 with the hygiene checks; accuracy under
#   random rotations of 15 and 30 degrees (3 draws each).
# Tables report the mean over seeds and a t-interval over seeds; model differences are claimed only with a
# paired test or non-overlapping intervals (see the report).
#
# Regenerates reports/kernel_size/ (about 45 minutes on 2 CPU cores):
#   bash analyses/kernel_size_mnist5k.sh
set -euo pipefail
OUT=${OUT:-runs/analyses/kernel_size}
robustbench-lr sweep kernel-size \
    --model lrnet_tiny --model resnet_tiny --kernel-sizes 3,5,7,9 --seeds 0,1,2 \
    --dataset mnist5k --epochs 6 \
    --attack pgd --norm linf --eps 0,0.02,0.05,0.1 --steps 20 --check-n 100 \
    --deform rotate=0,15,30 --draws 3 \
    --n 500 --device auto --quiet --out "$OUT"
robustbench-lr report "$OUT" -o "$OUT/report.pdf"
rm -rf reports/kernel_size/report_tables && mkdir -p reports/kernel_size
cp "$OUT"/report.pdf "$OUT"/results.csv reports/kernel_size/
cp -r "$OUT"/report_tables reports/kernel_size/

# GPU scale (not run by us: no GPU was available). CIFAR-10 at a local path, the small-image zoo members at half
# width, 60 epochs, 2,000 test images, PGD-20 at the usual 8/255 budget and the Engstrom worst-of-10:
#   robustbench-lr sweep kernel-size \
#       --model lrnet26_cifar --model resnet26_cifar --kernel-sizes 3,5,7,9 --seeds 0,1,2 --width 0.5 \
#       --dataset cifar10 --data-root /data/cifar10 --epochs 60 --train-batch-size 128 \
#       --attack pgd --norm linf --eps 0,1/255,2/255,4/255,8/255 --steps 20 \
#       --deform rotate=0,10,20,30 --deform worst-of-k=30 --draws 5 \
#       --n 2000 --device cuda --out runs/analyses/kernel_size_cifar
