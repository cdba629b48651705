#!/usr/bin/env bash
# The floors of robust training (reports/benchmarks.md, "Robust training"): the recipe's defaults for PGD-AT and
# for fast AT (FGSM with a random start, Wong et al. 2020) on resnet_tiny at Linf eps 0.3 on mnist5k, timed, then
# both evaluated with the full official AutoAttack (standard) at eps 0.3 on the first N held-out digits.
# Defaults: 15 epochs, AdamW 3e-3, batch 64, eps ramp over 2 epochs, PGD-AT 7 steps of 2.5 eps/7, FGSM-RS one
# step of 1.25 eps; after every epoch PGD-10 on the last 500 digits of the evaluation permutation (disjoint from
# the first N), best-robust epoch kept. Time it on an otherwise idle machine, 2 torch threads (the default):
#   bash analyses/robust_training_floors.sh      (about 40 minutes on 2 CPU cores)
set -euo pipefail
OUT=${OUT:-runs/analyses/floors}
N=${N:-500}
for m in pgd fgsm-rs; do
    /usr/bin/time -f "$m training wall seconds: %e" robustbench-lr train --model resnet_tiny --dataset mnist5k \
        --adversarial "$m" --eps 0.3 --resume --quiet --out "$OUT/resnet_tiny_$m"
done
/usr/bin/time -f "autoattack wall seconds: %e" robustbench-lr evaluate --checkpoint "$OUT/resnet_tiny_pgd" \
    --checkpoint "$OUT/resnet_tiny_fgsm-rs" --attack autoattack --eps 0,0.3 --n "$N" --no-hygiene --quiet \
    --out "$OUT/autoattack"
