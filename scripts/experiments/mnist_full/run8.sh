#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Issue 10, point 3: the ANP-VS long run stopped with a NaN loss in epoch 15 (the Kumaraswamy sample's gradient,
# fixed in 67c0482). Resume it from its epoch-14 checkpoint with the fixed code ($WORK/run10e) to 20 epochs and
# evaluate it, with the seed-1 table run (run7.sh, stage 4) paused meanwhile so the 2 cores serve one job.
set -u
O=$WORK/full_run/long
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
P=$(pgrep -f "python -m anpvs reproduce" | tr '\n' ' ')
[ -n "$P" ] && kill -STOP $P && stamp "paused the seed-1 run ($P)"
trap '[ -n "$P" ] && kill -CONT $P && stamp "resumed the seed-1 run"' EXIT
cd $WORK/run10e
export PYTHONPATH=$WORK/run10e/src
A="$WORK/main/.venv/bin/python -m anpvs"
D="--dataset mnist --data-dir $WORK/shared/data/mnist --quiet --seed 0 --set train.lr_milestones=[] --val-size 5000 --pgd-steps 20 --step-size 0.01"
if [ ! -f $O/anp_vs/eval_ep20.json ]; then
  $A train $D --method anp_vs --init $O/standard/checkpoint.pt --set model.mask_init=2.0 --set train.mask_lr=0.1 \
    --set method.kl_n=60000 --epochs 20 --out $O/anp_vs --resume >> $O/anp_vs.train.log 2>&1 || { stamp "anp_vs: training failed"; exit 1; }
  stamp "anp_vs trained to 20 epochs"
  $A eval $O/anp_vs/checkpoint.pt --quiet --out $O/anp_vs/eval_ep20.json > $O/anp_vs.eval_ep20.txt 2>&1 || stamp "anp_vs: eval failed"
fi
stamp "anp_vs done (20 epochs)"
