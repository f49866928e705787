#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Full-data MNIST work queue, part 5 (resumable: rerun it to continue; each stage skips finished work).
# run6.sh did the audit of seed 0 and the 10-epoch ANP-VS long run; from here: the test evaluation of that
# 10-epoch run, the long runs to 20 epochs (stage3c.sh: AT 20 epochs, ANP-VS extended 10 -> 20), then seed 1.
set -u
MN=$WORK/shared/data/mnist
OUT=$WORK/full_run/mnist_full
O=$WORK/full_run/long
start=$(date +%s)
stamp() { echo "$(date -u +%H:%M:%S) $* (+$(( $(date +%s) - start )) s)"; }
while pgrep -f "anpvs train .*--out $O/anp_vs" > /dev/null; do sleep 20; done   # left running by run6.sh
if [ ! -f $O/anp_vs/eval.json ] && [ "$(python3 -c "import json;print(json.loads(open('$O/anp_vs/log.jsonl').read().splitlines()[-1])['epoch'])" 2>/dev/null)" = 10 ]; then
  (cd $WORK/run10b && PYTHONPATH=$WORK/run10b/src $WORK/main/.venv/bin/python -m anpvs eval $O/anp_vs/checkpoint.pt --quiet > $O/anp_vs.eval.txt 2>&1)
  stamp "ANP-VS, 10 epochs: test evaluation done"
fi
$WORK/full_run/stage3c.sh
stamp "stage 3c done (long runs, 20 epochs)"
C="cd $WORK/run10c && PYTHONPATH=$WORK/run10c/src $WORK/main/.venv/bin/python -m anpvs"
bash -c "$C reproduce --table mnist --scale full --seeds 2 --data-dir $MN --out $OUT --device cpu --quiet" || exit 1
stamp "stage 4 done (seeds 0, 1)"
