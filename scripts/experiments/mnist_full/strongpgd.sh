#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Stronger PGD on the 20-epoch models, on AutoAttack's 1,000-digit subset: is the AutoAttack gap PGD-40's small step?
cd $WORK/main
for m in at anp_vs; do
  OMP_NUM_THREADS=1 .venv/bin/anpvs eval $WORK/full_run/long/$m/checkpoint.pt --steps 100 --step-size 0.03 --restarts 5 \
    --test-limit 1000 --no-latency --quiet --out $WORK/full_run/long/$m/eval_ep20_pgd100x5.json > $WORK/full_run/long/$m.eval_ep20_pgd100x5.txt 2>&1
  echo "$(date +%T) $m strong PGD done"
done
