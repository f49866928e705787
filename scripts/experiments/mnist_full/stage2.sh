#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Stage 2 (issue 10, point 2): the VS term and the training attack on full MNIST, every arm from the table's
# Standard seed-0 model (or from scratch for AT), 3 epochs like the table rows, PGD-40 on all 10,000 test digits.
# ANP (lambda 0) and ANP-VS (lambda 1e-3, mean form) are the table's own seed-0 rows.
set -u
cd $WORK/run10b
export PYTHONPATH=$WORK/run10b/src
A="$WORK/main/.venv/bin/python -m anpvs"
O=$WORK/full_run/sweep
STD=$WORK/full_run/mnist_full/runs/standard/seed0/checkpoint.pt
D="--dataset mnist --data-dir $WORK/shared/data/mnist --quiet --seed 0 --set train.lr_milestones=[] --set data.val_size=0"
M="--init $STD --set model.mask_init=2.0 --set train.mask_lr=0.1 --set method.kl_n=60000"
mkdir -p $O
run() {  # name, then train arguments; resumes an interrupted run, evaluates once
  local name=$1; shift
  if [ ! -f $O/$name/eval.json ]; then
    if [ -f $O/$name/checkpoint.pt ]; then $A train $D "$@" --out $O/$name --resume > $O/$name.train.log 2>&1
    else $A train $D "$@" --out $O/$name > $O/$name.train.log 2>&1; fi || { echo "$name: training failed"; return; }
    $A eval $O/$name/checkpoint.pt --quiet > $O/$name.eval.txt 2>&1 || echo "$name: eval failed"
  fi
  echo "$(date -u +%H:%M:%S) $name done"
}
run anpvs_lam1e-2 --method anp_vs $M --epochs 3 --pgd-steps 20 --step-size 0.01 --vs-weight 0.01
run anpvs_lam1e-1 --method anp_vs $M --epochs 3 --pgd-steps 20 --step-size 0.01 --vs-weight 0.1
run anpvs_sum_lam1e-3 --method anp_vs $M --epochs 3 --pgd-steps 20 --step-size 0.01 --set method.vs_reduction=sum
run at_pgd10_0.05 --method at --epochs 3 --pgd-steps 10 --step-size 0.05
run anpvs_pgd10_0.05 --method anp_vs $M --epochs 3 --pgd-steps 10 --step-size 0.05
$WORK/full_run/recipe.sh  # issue 10 point 6 (cheap, sample scale)
