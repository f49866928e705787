#!/bin/bash
# Full-data MNIST work queue, part 2 (resumable: rerun it to continue; each stage skips finished work).
# run3.sh did stages 1a, 2, 2b, recipe and 1b (seed 0 of every row of the frozen checkout, /work/run10); its
# Pretrained AT found no Fashion-MNIST and its TRADES trained with 20 attack steps (kept in arms/). From here
# on the current code (/work/run10c) runs everything: training results are the same (tested).
set -u
MN=/work/shared/data/mnist
OUT=/work/full_run/mnist_full
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
/work/full_run/stage3.sh   # Pretrained AT, TRADES (40 steps), the sum-form row: seed 0 + AutoAttack; the long run
stamp "stage 3 done"
C="cd /work/run10c && PYTHONPATH=/work/run10c/src /work/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
bash -c "$C audit $OUT --test-limit 1000 --aa-limit 1000 --seeds 0 --device cpu --quiet"
stamp "stage 5 done (audit rc=$?)"
