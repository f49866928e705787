#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Stage 2b (issue 10, point 2): is the per-layer sum form's effect (seed 0: ANP-VS 82.8% PGD-40 vs 78.5% for the
# mean form) more than one seed's luck? The same two arms with training seed 1, both from the table's Standard
# seed-0 model (so the pair differs only in the V form), 3 epochs, PGD-40 on all 10,000 test digits.
set -u
cd $WORK/run10b
export PYTHONPATH=$WORK/run10b/src
A="$WORK/main/.venv/bin/python -m anpvs"
O=$WORK/full_run/sweep
STD=$WORK/full_run/mnist_full/runs/standard/seed0/checkpoint.pt
D="--dataset mnist --data-dir $WORK/shared/data/mnist --quiet --set train.lr_milestones=[] --set data.val_size=0"
M="--init $STD --set model.mask_init=2.0 --set train.mask_lr=0.1 --set method.kl_n=60000"
run() {
  local name=$1; shift
  if [ ! -f $O/$name/eval.json ]; then
    if [ -f $O/$name/checkpoint.pt ]; then $A train $D "$@" --out $O/$name --resume > $O/$name.train.log 2>&1
    else $A train $D "$@" --out $O/$name > $O/$name.train.log 2>&1; fi || { echo "$name: training failed"; return; }
    $A eval $O/$name/checkpoint.pt --quiet > $O/$name.eval.txt 2>&1 || echo "$name: eval failed"
  fi
  echo "$(date -u +%H:%M:%S) $name done"
}
run anpvs_sum_lam1e-3_s1 --method anp_vs $M --seed 1 --epochs 3 --pgd-steps 20 --step-size 0.01 --set method.vs_reduction=sum
run anpvs_mean_lam1e-3_s1 --method anp_vs $M --seed 1 --epochs 3 --pgd-steps 20 --step-size 0.01
