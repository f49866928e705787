#!/bin/bash
# Full-data MNIST work queue, part 4 (resumable: rerun it to continue; each stage skips finished work).
# run5.sh did stage 3a (seed 0 of every row); its audit saw only the 5 models of that call's manifest
# (reproduce.json lists the runs of the last call, which had --rows), so a reproduce of every row (all reused,
# no training) rewrites the manifest first, then the audit covers every seed-0 model (reusing the records
# the first audit wrote). Then stage 3b (the long runs) and seed 1 of every row.
set -u
MN=/work/shared/data/mnist
OUT=/work/full_run/mnist_full
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
while pgrep -f "anpvs audit /work/full_run/mnist_full" > /dev/null; do sleep 20; done
C="cd /work/run10c && PYTHONPATH=/work/run10c/src /work/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 1 --data-dir $MN --out $OUT --device cpu --quiet --no-figures" || exit 1
stamp "manifest of seed 0 with every row"
bash -c "$C audit $OUT --test-limit 1000 --aa-limit 1000 --seeds 0 --device cpu --quiet"
stamp "audit of seed 0 done (rc=$?)"
/work/full_run/stage3b.sh
stamp "stage 3b done (long runs)"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
