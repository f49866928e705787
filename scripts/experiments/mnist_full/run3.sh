#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Full-data MNIST work queue, resumable: rerun this script to continue where it stopped.
# Stage 1a: the rows the paper's claim is about (AT, ANP-VS, ANP; seed 0, + AutoAttack) first;
# stage 2: lambda / V-form / training-attack study; stage 1b: every row, seed 0; the recipe details;
# stage 3: the longer run; stage 4: seed 1; stage 5: the audit. Each stage skips what is finished.
set -u
cd $WORK/run10
export PYTHONPATH=$WORK/run10/src
PY=$WORK/main/.venv/bin/python
OUT=$WORK/full_run/mnist_full
MN=$WORK/shared/data/mnist
R="$PY -m anpvs reproduce --table mnist --scale full --data-dir $MN --out $OUT --device cpu --quiet --no-figures"
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
$R --seeds 1 --rows standard,bp,at,anp_vs,anp || exit 1
stamp "stage 1a done"
$WORK/full_run/stage2.sh
$WORK/full_run/stage2b.sh
stamp "stage 2 done"
$R --seeds 1 || exit 1
stamp "stage 1b done (seed 0)"
$WORK/full_run/recipe.sh
stamp "recipe details done"
$WORK/full_run/stage3.sh
stamp "stage 3 done"
# stage 4: seed 1 of every row, and the extra sum-form row, with the current code (the frozen checkout's protocol
# lacks that row and trains TRADES with 20 attack steps; training results are the same, tested); finds seed 0 done
C="cd $WORK/run10c && PYTHONPATH=$WORK/run10c/src $WORK/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
bash -c "$C audit $OUT --test-limit 1000 --aa-limit 1000 --seeds 0 --device cpu --quiet"
stamp "stage 5 done (audit rc=$?)"
