#!/bin/bash
# Pilot of the full-data protocol: AT vs ANP-VS, same epochs, under the paper's training attack (PGD-20, step 0.01)
# and the cheaper one (PGD-10, step 0.05); full 60,000 training digits; PGD-40 on 2,000 seeded test digits.
A=anpvs
D="--dataset mnist --data-dir ${MNIST_DIR:-../shared/data/mnist} --quiet --set train.schedule=constant"
O=${OUT:-results/training_attack_pilot}; mkdir -p $O
[ -f $O/std/checkpoint.pt ] || $A train $D --method standard --epochs 2 --out $O/std > $O/std.log 2>&1
M="--set model.mask_init=2.0 --set train.mask_lr=0.1 --set method.kl_n=60000"
for atk in "20 0.01" "10 0.05"; do
  set -- $atk; tag=pgd$1_$2
  [ -f $O/at_$tag/checkpoint.pt ] || $A train $D --method at --epochs 2 --pgd-steps $1 --step-size $2 --out $O/at_$tag > $O/at_$tag.log 2>&1
  [ -f $O/anpvs_$tag/checkpoint.pt ] || $A train $D --method anp_vs --init $O/std/checkpoint.pt $M --epochs 2 --pgd-steps $1 --step-size $2 --out $O/anpvs_$tag > $O/anpvs_$tag.log 2>&1
  for r in at_$tag anpvs_$tag; do
    [ -f $O/$r/eval.json ] || $A eval $O/$r/checkpoint.pt --test-limit 2000 --quiet --no-latency > $O/$r.eval.txt 2>&1
  done
done
echo "finished: $O"
