#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Full-data MNIST work queue, part 2 (resumable: rerun it to continue; each stage skips finished work).
# run3.sh did stages 1a, 2, 2b, recipe and 1b (seed 0 of every row of the frozen checkout, $WORK/run10); its
# Pretrained AT found no Fashion-MNIST and its TRADES trained with 20 attack steps (kept in arms/). From here
# on the current code ($WORK/run10c) runs everything: training results are the same (tested).
set -u
MN=$WORK/shared/data/mnist
OUT=$WORK/full_run/mnist_full
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
$WORK/full_run/stage3.sh   # Pretrained AT, TRADES (40 steps), the sum-form row: seed 0 + AutoAttack; the long run
stamp "stage 3 done"
C="cd $WORK/run10c && PYTHONPATH=$WORK/run10c/src $WORK/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
bash -c "$C audit $OUT --test-limit 1000 --aa-limit 1000 --seeds 0 --device cpu --quiet"
stamp "stage 5 done (audit rc=$?)"
