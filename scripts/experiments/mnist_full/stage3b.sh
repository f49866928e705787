#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Stage 3b (issue 10, point 3): a longer AT and ANP-VS run on full MNIST with a 5,000-digit validation split held
# out of the training set (never the test set), logged every epoch: clean / PGD-40 accuracy, vulnerability,
# active units. ANP-VS starts from a Standard model trained on the same 55,000 digits.
set -u
cd $WORK/run10b
export PYTHONPATH=$WORK/run10b/src
A="$WORK/main/.venv/bin/python -m anpvs"
O=$WORK/full_run/long
EP=${EPOCHS:-10}
D="--dataset mnist --data-dir $WORK/shared/data/mnist --quiet --seed 0 --set train.lr_milestones=[] --val-size 5000 --pgd-steps 20 --step-size 0.01"
mkdir -p $O
run() {
  local name=$1; shift
  if [ ! -f $O/$name/eval.json ]; then
    if [ -f $O/$name/checkpoint.pt ]; then $A train $D "$@" --out $O/$name --resume > $O/$name.train.log 2>&1
    else $A train $D "$@" --out $O/$name > $O/$name.train.log 2>&1; fi || { echo "$name: training failed"; return; }
    $A eval $O/$name/checkpoint.pt --quiet > $O/$name.eval.txt 2>&1 || echo "$name: eval failed"
  fi
  echo "$(date -u +%H:%M:%S) $name done"
}
run standard --method standard --epochs 2
run anp_vs --method anp_vs --init $O/standard/checkpoint.pt --set model.mask_init=2.0 --set train.mask_lr=0.1 --set method.kl_n=60000 --epochs $EP
run at --method at --epochs $EP
