#!/usr/bin/env bash
# The robust comparison at demo scale: the five families trained to be robust (Linf eps 0.3 on mnist5k) with one
# recipe and budget, evaluated on the same held-out digits with the reference attacks.
#
# Training (the same for every model: AdamW 3e-3, batch 64, EPOCHS epochs, eps ramp over 2 epochs, examples
# crafted in eval mode, best-robust epoch kept by PGD-10 on the 500 last digits of the evaluation permutation,
# disjoint from the N evaluated ones):
#   PGD-AT (7 steps of 2.5 eps/7): resnet_tiny and lrnet_tiny with seeds 0 and 1; resnet_tiny_glore,
#   resnet_tiny_cnl, resnet_tiny_mssar with seed 0;
#   TRADES (beta 6, 7 KL steps): resnet_tiny and lrnet_tiny with seeds 0 and 1.
# Evaluation on the first N held-out digits (the same for every model; N = 200 on 2 CPU cores, see below):
#   attacks:     clean accuracy; untargeted PGD-50 and targeted PGD-50 towards a random wrong class (the LR-Net
#                paper's protocol, Xie et al.) at eps 0.1, 0.2 and 0.3, with the hygiene checks on 50 examples;
#   attacks_apgd: at the standard budget eps 0.3, the official AutoAttack's two APGD attacks (APGD-CE, APGD-T
#                with 9 targets; pyautoattack's code and parameters, labelled 'autoattack[apgd-ce+apgd-t]'
#                everywhere, never as AutoAttack), every model;
#   attacks_aa:  the full official AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square 5000) at eps 0.3 on the
#                PGD-AT and TRADES models of resnet_tiny and lrnet_tiny, seed 0;
#   deform:      random rotations (15, 30 degrees, 3 draws) and Engstrom's worst-of-10 at +-30 degrees / 3 px.
#   The summary takes the per-example worst case over every attack run on the same examples (worst-case-all).
# Why the reduced protocol: on 2 CPU cores APGD-T alone costs ~1 s per robust digit and eps for resnet_tiny and
# more for lrnet_tiny, FAB-T and Square as much again: the full AutoAttack at 3 eps on 11 models x 200 digits
# would take ~10 CPU-hours. On a GPU run the full protocol (last lines).
#
# Regenerates reports/robust_training/ (several hours on 2 CPU cores; every stage resumes where it stopped):
#   bash analyses/robust_families_mnist5k.sh
set -euo pipefail
# One torch / OpenMP thread per process: results are bit-identical only at the same thread count (README, "What
# reproduces"), and two analyses can then share a 2-core machine. The committed report was made this way.
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/analyses/robust_training}
EPOCHS=${EPOCHS:-8}
N=${N:-200}
train() {  # model method seed
    robustbench-lr train --model "$1" --dataset mnist5k --adversarial "$2" --eps 0.3 --epochs "$EPOCHS" --seed "$3" \
        --quiet --resume --out "$OUT/checkpoints/$1_$2_s$3"
}
for s in 0 1; do for m in resnet_tiny lrnet_tiny; do train "$m" pgd "$s"; done; done
for m in resnet_tiny_glore resnet_tiny_cnl resnet_tiny_mssar; do train "$m" pgd 0; done
for s in 0 1; do for m in resnet_tiny lrnet_tiny; do train "$m" trades "$s"; done; done
CKS=()
for d in "$OUT"/checkpoints/*; do CKS+=(--checkpoint "$d"); done
C=$OUT/checkpoints
robustbench-lr evaluate "${CKS[@]}" --attack pgd --attack pgd-random-target --eps 0,0.1,0.2,0.3 --steps 50 \
    --n "$N" --check-n 50 --quiet --out "$OUT/attacks"
robustbench-lr evaluate "${CKS[@]}" --attack autoattack --aa-attacks apgd-ce,apgd-t --eps 0,0.3 --n "$N" \
    --no-hygiene --quiet --out "$OUT/attacks_apgd"
robustbench-lr evaluate --checkpoint "$C/resnet_tiny_pgd_s0" --checkpoint "$C/lrnet_tiny_pgd_s0" \
    --checkpoint "$C/resnet_tiny_trades_s0" --checkpoint "$C/lrnet_tiny_trades_s0" \
    --attack autoattack --eps 0,0.3 --n "$N" --no-hygiene --quiet --out "$OUT/attacks_aa"
robustbench-lr sweep deform "${CKS[@]}" --deform rotate=0,15,30 --deform worst-of-k=0,30 --draws 3 --n-examples "$N" \
    --quiet --out "$OUT/deform"
python analyses/robust_training_summary.py "$OUT" reports/robust_training
robustbench-lr report "$OUT/attacks" "$OUT/attacks_apgd" "$OUT/attacks_aa" "$OUT/deform" "$OUT/training" \
    -o "$OUT/report.pdf"
cp "$OUT"/report.pdf reports/robust_training/
for r in attacks attacks_apgd attacks_aa deform; do
    cp "$OUT/$r/results.csv" "reports/robust_training/results_$r.csv"
    cp "$OUT/$r/hygiene.csv" "reports/robust_training/hygiene_$r.csv"
done
rm -rf reports/robust_training/report_tables && cp -r "$OUT"/report_tables reports/robust_training/

# GPU scale (not run by us: no GPU was lent to this work):
#   for m in resnet26_cifar lrnet26_cifar; do robustbench-lr train --model $m --width 0.5 --dataset cifar10 \
#       --data-root /data/cifar10 --adversarial pgd --eps 8/255 --attack-steps 10 --epochs 60 --device cuda \
#       --out runs/analyses/robust_cifar/$m; done
#   robustbench-lr evaluate --checkpoint runs/analyses/robust_cifar/resnet26_cifar \
#       --checkpoint runs/analyses/robust_cifar/lrnet26_cifar --attack autoattack --eps 0,2/255,4/255,8/255 \
#       --n 10000 --device cuda --out runs/analyses/robust_cifar/eval
