#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Full-data MNIST work queue, part 3 (resumable: rerun it to continue; each stage skips finished work).
# Same work as run4.sh, in a new order so that seed 0 is audited before the long runs and seed 1:
# stage 3a (Pretrained AT, TRADES with 40 steps, the sum-form row: seed 0 + AutoAttack), the audit of seed 0,
# stage 3b (the long AT / ANP-VS runs with a validation split), seed 1 of every row.
set -u
MN=$WORK/shared/data/mnist
OUT=$WORK/full_run/mnist_full
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
# a stage-3a process started by run4.sh may still be running: let it finish rather than run it twice
while pgrep -f "reproduce --table mnist --scale full --seeds 1 --rows" > /dev/null; do sleep 30; done
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
  dpkg -i /var/cache/apt/archives/dataset-fashion-mnist_*_all.deb > /dev/null || echo "no Fashion-MNIST"
C="cd $WORK/run10c && PYTHONPATH=$WORK/run10c/src $WORK/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 1 --rows pretrained_at,trades,anp_vs_sum --data-dir $MN \
  --out $OUT --device cpu --quiet --no-figures" || exit 1
stamp "stage 3a done (seed 0 of every row)"
bash -c "$C audit $OUT --test-limit 1000 --aa-limit 1000 --seeds 0 --device cpu --quiet"
stamp "audit of seed 0 done (rc=$?)"
$WORK/full_run/stage3b.sh
stamp "stage 3b done (long runs)"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
