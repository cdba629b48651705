#!/usr/bin/env bash
# Fast adversarial training (FGSM with a random start, Wong et al. 2020) against the PGD-AT recipe, on resnet_tiny
# at Linf eps 0.3 on mnist5k: the same 8-epoch budget, seeds 0 and 1, the per-epoch PGD-10 check on the 500 last
# digits of the evaluation permutation (it is what catches catastrophic overfitting), then on the first N
# held-out digits (the same as analyses/robust_families_mnist5k.sh, whose attacks_std run holds the PGD-AT
# models' figures under the same attacks): PGD-50 and the official AutoAttack's APGD-CE + APGD-T at eps 0.3.
#   bash analyses/fast_at_mnist5k.sh        (about 15 minutes on one CPU core)
set -euo pipefail
OUT=${OUT:-runs/analyses/fast_at}
N=${N:-200}
for s in 0 1; do
    robustbench-lr train --model resnet_tiny --dataset mnist5k --adversarial fgsm-rs --eps 0.3 --epochs 8 \
        --seed "$s" --quiet --resume --out "$OUT/checkpoints/resnet_tiny_fgsm-rs_s$s"
done
robustbench-lr evaluate --checkpoint "$OUT/checkpoints/resnet_tiny_fgsm-rs_s0" \
    --checkpoint "$OUT/checkpoints/resnet_tiny_fgsm-rs_s1" --attack pgd --attack autoattack \
    --aa-attacks apgd-ce,apgd-t --eps 0,0.3 --steps 50 --n "$N" --check-n 50 --quiet --out "$OUT/attacks_std"
