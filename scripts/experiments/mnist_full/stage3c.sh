#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Stage 3c (issue 10, point 3): the long runs to 20 epochs. After 10 epochs ANP-VS was still moving (validation
# PGD-20 +0.4-0.9 points and ~8 dense units fewer per epoch), so both runs go to 20: ANP-VS extends its 10-epoch
# run (`train --resume --epochs 20`: with a constant learning rate this is exactly a 20-epoch run), AT trains
# 20 epochs. Same settings as stage3b.sh; the code is the frozen checkout $WORK/run10d (has the extension).
set -u
cd $WORK/run10d
export PYTHONPATH=$WORK/run10d/src
A="$WORK/main/.venv/bin/python -m anpvs"
O=$WORK/full_run/long
EP=${EPOCHS:-20}
D="--dataset mnist --data-dir $WORK/shared/data/mnist --quiet --seed 0 --set train.lr_milestones=[] --val-size 5000 --pgd-steps 20 --step-size 0.01"
run() {  # trains (or resumes / extends) to $EP epochs, then evaluates on the test set once (eval_ep$EP.json)
  local name=$1; shift
  if [ ! -f $O/$name/eval_ep$EP.json ]; then
    if [ -f $O/$name/checkpoint.pt ]; then $A train $D "$@" --epochs $EP --out $O/$name --resume >> $O/$name.train.log 2>&1
    else $A train $D "$@" --epochs $EP --out $O/$name >> $O/$name.train.log 2>&1; fi || { echo "$name: training failed"; return; }
    $A eval $O/$name/checkpoint.pt --quiet --out $O/$name/eval_ep$EP.json > $O/$name.eval_ep$EP.txt 2>&1 || echo "$name: eval failed"
  fi
  echo "$(date -u +%H:%M:%S) $name done ($EP epochs)"
}
run at --method at
run anp_vs --method anp_vs --init $O/standard/checkpoint.pt --set model.mask_init=2.0 --set train.mask_lr=0.1 --set method.kl_n=60000
