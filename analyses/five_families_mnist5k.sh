#!/usr/bin/env bash
# The five families of the literature on the same footing, at demo scale: the residual skeleton with
# convolution (resnet_tiny, 3x3), local relation (lrnet_tiny, 7x7), and resnet_tiny plus GloRe, CNL or MS-SAR
# (resnet_tiny_glore, resnet_tiny_cnl, resnet_tiny_mssar). One training seed each on mnist5k, then on the same
# 500 held-out digits: FGSM and PGD-20 eps sweeps with the hygiene checks, random rotations and the worst-of-10
# spatial attack, the LR figures, captum attributions and the PDF report.
#
# Regenerates reports/five_families/ (about 20 minutes on 2 CPU cores):
#   bash analyses/five_families_mnist5k.sh
set -euo pipefail
OUT=${OUT:-runs/analyses/five_families}
robustbench-lr demo \
    --model resnet_tiny --model lrnet_tiny --model resnet_tiny_glore --model resnet_tiny_cnl --model resnet_tiny_mssar \
    --dataset mnist5k --epochs 10 --n 500 --steps 20 --check-n 100 --draws 3 --seed 0 --quiet --out "$OUT"
rm -rf reports/five_families/report_tables && mkdir -p reports/five_families
cp "$OUT"/report.pdf "$OUT"/results.csv "$OUT"/hygiene.csv reports/five_families/
cp -r "$OUT"/report_tables reports/five_families/

# GPU scale (not run by us: no GPU was available):
#   robustbench-lr demo --dataset cifar10 --data-root /data/cifar10 --device cuda --epochs 60 --n 2000 \
#       --model resnet26_cifar --model lrnet26_cifar --model resnet26_cifar_glore --model resnet26_cifar_cnl \
#       --model resnet26_cifar_mssar --out runs/analyses/five_families_cifar
