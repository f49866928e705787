#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Issue 10, point 3: AutoAttack beside PGD-40 on the table's seeded 1,000-digit subset for both 20-epoch runs
# (what the table's AutoAttack column does: `pgd` + `autoattack`, --test-limit 1000), with the seed-1 table run
# paused meanwhile.
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
for r in anp_vs at; do
  if [ ! -f $O/$r/eval_ep20_autoattack.json ]; then
    $A eval $O/$r/checkpoint.pt --attack pgd --attack autoattack --test-limit 1000 --no-latency --quiet \
      --out $O/$r/eval_ep20_autoattack.json > $O/$r.eval_ep20_autoattack.txt 2>&1 || stamp "$r: AutoAttack failed"
  fi
  stamp "$r: AutoAttack done"
done
