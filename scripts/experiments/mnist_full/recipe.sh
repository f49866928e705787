#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Issue 10 point 6: effect of two recipe details on their rows, sample scale (the 4,000 bundled digits, the
# settings of protocols/mnist_sample.yaml: PGD-10 of step 0.05, constant LR, 10 epochs), seeds 0 and 1,
# PGD-40 on the 1,000 bundled test digits.
set -u
cd $WORK/run10b
export PYTHONPATH=$WORK/run10b/src
A="$WORK/main/.venv/bin/python -m anpvs"
O=$WORK/full_run/recipe
D="--dataset mnist_sample --quiet --set train.lr_milestones=[] --pgd-steps 10 --step-size 0.05 --epochs 10"
for arm in "at decay_weights --set train.decay_scope=weights" "at decay_all --set train.decay_scope=all" \
           "at_bnn shared --set method.bnn_shared_sample=true" "at_bnn per_forward --set method.bnn_shared_sample=false"; do
  for seed in 0 1; do
    set -- $arm; m=$1; tag=$2; shift 2; name=${m}_${tag}_s$seed
    [ -f $O/$name/eval.json ] && continue
    $A train $D --method $m --seed $seed "$@" --out $O/$name --force > $O/$name.train.log 2>&1 && \
      $A eval $O/$name/checkpoint.pt --quiet --no-latency > $O/$name.eval.txt 2>&1
    echo "$(date -u +%H:%M:%S) $name done"
  done
done
