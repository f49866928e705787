#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Full-data MNIST work queue, part 4 (resumable: rerun it to continue; each stage skips finished work).
# run5.sh did stage 3a (seed 0 of every row); its audit saw only the 5 models of that call's manifest
# (reproduce.json lists the runs of the last call, which had --rows), so a reproduce of every row (all reused,
# no training) rewrites the manifest first, then the audit covers every seed-0 model (reusing the records
# the first audit wrote). Then stage 3b (the long runs) and seed 1 of every row.
set -u
MN=$WORK/shared/data/mnist
OUT=$WORK/full_run/mnist_full
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
while pgrep -f "anpvs audit $WORK/full_run/mnist_full" > /dev/null; do sleep 20; done
C="cd $WORK/run10c && PYTHONPATH=$WORK/run10c/src $WORK/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 1 --data-dir $MN --out $OUT --device cpu --quiet --no-figures" || exit 1
stamp "manifest of seed 0 with every row"
bash -c "$C audit $OUT --test-limit 1000 --aa-limit 1000 --seeds 0 --device cpu --quiet"
stamp "audit of seed 0 done (rc=$?)"
$WORK/full_run/stage3b.sh
stamp "stage 3b done (long runs)"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
