#!/usr/bin/env bash
# The robust comparison at demo scale: the five families trained to be robust (Linf eps 0.3 on mnist5k) with one
# recipe and budget, evaluated on the same held-out digits with the reference attacks.
#
# Training (the same for every model: AdamW 3e-3, batch 64, EPOCHS epochs, eps ramp over 2 epochs, examples
# crafted in eval mode, best-robust epoch kept by PGD-10 on the 500 last digits of the evaluation permutation,
# disjoint from the N evaluated ones):
#   PGD-AT (7 steps of 2.5 eps/7): resnet_tiny and lrnet_tiny with seeds 0 and 1; resnet_tiny_glore,
#   resnet_tiny_cnl, resnet_tiny_mssar with seed 0;
#   TRADES (beta 6, 7 KL steps): resnet_tiny and lrnet_tiny with seeds 0 and 1;
#   four one-change variants with seed 0 (below).
# Evaluation on the first N held-out digits (the same for every model; N = 100 on 2 CPU cores, see below):
#   attacks:     clean accuracy; untargeted PGD-50 and targeted PGD-50 towards a random wrong class (the LR-Net
#                paper's protocol, Xie et al.) at eps 0.1, 0.2 and 0.3, with the hygiene checks on 50 examples;
#   attacks_apgd: at the standard budget eps 0.3, the official AutoAttack's two APGD attacks (APGD-CE, APGD-T
#                with 9 targets; pyautoattack's code and parameters, labelled 'autoattack[apgd-ce+apgd-t]'
#                everywhere, never as AutoAttack), every model; attacks_apgd_low_*: the same at eps 0.1 and 0.2
#                on every lrnet_tiny model and the resnet_tiny PGD-AT / TRADES models;
#   attacks_aa:  the full official AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square 5000) at eps 0.3 on the
#                PGD-AT and TRADES models of resnet_tiny and lrnet_tiny, seed 0;
#   deform:      random rotations (15, 30 degrees, 3 draws) and Engstrom's worst-of-10 at +-30 degrees / 3 px.
#   The summary takes the per-example worst case over every attack run on the same examples (worst-case-all).
# Why the reduced protocol: on 2 CPU cores APGD-T alone costs ~1 s per robust digit and eps for resnet_tiny and
# more for lrnet_tiny, FAB-T and Square as much again: the full AutoAttack at 3 eps on 15 models x 200 digits
# would take ~10 CPU-hours, and even this reduced protocol on 200 digits projected to ~3 hours of evaluation
# (measured on the first models), so N = 100. On a GPU run the full protocol (last lines).
#
# Regenerates reports/robust_training/ (several hours on 2 CPU cores; every stage resumes where it stopped):
#   bash analyses/robust_families_mnist5k.sh
set -euo pipefail
# One torch / OpenMP thread per process: results are bit-identical only at the same thread count (README, "What
# reproduces"), and two analyses can then share a 2-core machine. The committed report was made this way.
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/analyses/robust_training}
EPOCHS=${EPOCHS:-8}
N=${N:-100}
train() {  # model method seed
    robustbench-lr train --model "$1" --dataset mnist5k --adversarial "$2" --eps 0.3 --epochs "$EPOCHS" --seed "$3" \
        --quiet --resume --out "$OUT/checkpoints/$1_$2_s$3"
}
for s in 0 1; do for m in resnet_tiny lrnet_tiny; do train "$m" pgd "$s"; done; done
# lrnet_tiny under the default recipe trains poorly at eps 0.3 (see the report): three honest alternatives with the
# same budget (8 epochs, 7-step PGD-AT, seed 0), each changing one thing: a longer eps ramp (4 epochs), a smaller
# learning rate (1e-3), and a 3x3 conv stem instead of the 1x1 + LR stem (an architecture change, labelled so;
# the fragility ablation's lead). The ramp that helps LR-Net is given to resnet_tiny too, so that the two
# families are compared under the same recipe. Labels: <model>-<variant>_pgd_s0.
variant() {  # model name args...
    local model=$1 name=$2; shift 2
    robustbench-lr train --model "$model" --dataset mnist5k --adversarial pgd --eps 0.3 --epochs "$EPOCHS" --seed 0 \
        --quiet --resume --out "$OUT/checkpoints/${model}-${name}_pgd_s0" "$@"
}
# Two lanes of one thread each (the resnet-like and the LR-Net models); each training is single-process and
# deterministic, so running them side by side changes no number.
(
    for m in resnet_tiny_glore resnet_tiny_cnl resnet_tiny_mssar; do train "$m" pgd 0; done
    for s in 0 1; do train resnet_tiny trades "$s"; done
    variant resnet_tiny warm4 --eps-warmup-epochs 4
) & lane_r=$!
(
    variant lrnet_tiny warm4 --eps-warmup-epochs 4
    variant lrnet_tiny lr1e-3 --lr 1e-3
    for s in 0 1; do train lrnet_tiny trades "$s"; done
    variant lrnet_tiny convstem --model-arg stem_spatial='"conv"' --model-arg stem_kernel_size=3
) & lane_l=$!
wait "$lane_r"; wait "$lane_l"
CKS=()
for d in "$OUT"/checkpoints/*; do CKS+=(--checkpoint "$d"); done
C=$OUT/checkpoints
# Three evaluation processes side by side (one thread each, the same examples): the PGD runs and the rotations;
# the APGD pair; the full AutoAttack.
(
    robustbench-lr evaluate "${CKS[@]}" --attack pgd --attack pgd-random-target --eps 0,0.1,0.2,0.3 --steps 50 \
        --n "$N" --check-n 50 --quiet --out "$OUT/attacks"
    robustbench-lr sweep deform "${CKS[@]}" --deform rotate=0,15,30 --deform worst-of-k=0,30 --draws 3 \
        --n-examples "$N" --quiet --out "$OUT/deform"
) & lane_a=$!
robustbench-lr evaluate "${CKS[@]}" --attack autoattack --aa-attacks apgd-ce,apgd-t --eps 0,0.3 --n "$N" \
    --no-hygiene --quiet --out "$OUT/attacks_apgd" & lane_b=$!
robustbench-lr evaluate --checkpoint "$C/resnet_tiny_pgd_s0" --checkpoint "$C/lrnet_tiny_pgd_s0" \
    --checkpoint "$C/resnet_tiny_trades_s0" --checkpoint "$C/lrnet_tiny_trades_s0" \
    --attack autoattack --eps 0,0.3 --n "$N" --no-hygiene --quiet --out "$OUT/attacks_aa" & lane_c=$!
wait "$lane_a"; wait "$lane_b"; wait "$lane_c"
# At eps 0.3 the APGD pair fooled LR-Net models that PGD-50 left robust (up to 58 points: the report), so PGD-50's
# numbers at 0.1 and 0.2 cannot stand alone for them: the APGD pair at 0.1 and 0.2 on every lrnet_tiny model and
# on the resnet_tiny PGD-AT / TRADES twins (the other resnet-family models were within 0-7 points of PGD-50 at
# 0.3, and are reported with PGD-50 only at 0.1 and 0.2, labelled so).
LRS=(); for d in "$C"/lrnet_tiny*; do LRS+=(--checkpoint "$d"); done
robustbench-lr evaluate "${LRS[@]}" --attack autoattack --aa-attacks apgd-ce,apgd-t --eps 0,0.1,0.2 --n "$N" \
    --no-hygiene --quiet --out "$OUT/attacks_apgd_low_lr" & lane_d=$!
robustbench-lr evaluate --checkpoint "$C/resnet_tiny_pgd_s0" --checkpoint "$C/resnet_tiny_pgd_s1" \
    --checkpoint "$C/resnet_tiny_trades_s0" --checkpoint "$C/resnet_tiny_trades_s1" \
    --attack autoattack --aa-attacks apgd-ce,apgd-t --eps 0,0.1,0.2 --n "$N" --no-hygiene --quiet \
    --out "$OUT/attacks_apgd_low_rn" & lane_e=$!
wait "$lane_d"; wait "$lane_e"
python analyses/robust_training_summary.py "$OUT" reports/robust_training
robustbench-lr report "$OUT/attacks" "$OUT/attacks_apgd" "$OUT/attacks_apgd_low_lr" "$OUT/attacks_apgd_low_rn" \
    "$OUT/attacks_aa" "$OUT/deform" "$OUT/training" \
    -o "$OUT/report.pdf"
cp "$OUT"/report.pdf reports/robust_training/
for r in attacks attacks_apgd attacks_apgd_low_lr attacks_apgd_low_rn attacks_aa deform; do
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
