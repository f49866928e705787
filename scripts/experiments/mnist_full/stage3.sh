#!/bin/bash
# $WORK: the folder that held the runs (full_run/), the frozen checkouts of the code (run10*/),
# the Python (main/.venv/) and the data (shared/data/) on the machine that ran this.
: "${WORK:?set WORK (see the comment above)}"
# Stage 3 (issue 10, point 3): a longer AT and ANP-VS run on full MNIST with a 5,000-digit validation split held
# out of the training set (never the test set), logged every epoch: clean / PGD-40 accuracy, vulnerability,
# active units. ANP-VS starts from a Standard model trained on the same 55,000 digits.
set -u
cd $WORK/run10b
export PYTHONPATH=$WORK/run10b/src
A="$WORK/main/.venv/bin/python -m anpvs"
O=$WORK/full_run/long
EP=${EPOCHS:-10}
D="--dataset mnist --data-dir $WORK/shared/data/mnist --quiet --seed 0 --set train.lr_milestones=[] --val-size 5000 --pgd-steps 20 --step-size 0.01"
mkdir -p $O
# Fashion-MNIST (for Pretrained AT's pre-training) is the Debian package dataset-fashion-mnist; install it from
# the apt cache if this machine lost it
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
  dpkg -i /var/cache/apt/archives/dataset-fashion-mnist_*_all.deb > /dev/null || echo "no Fashion-MNIST"
# first, Pretrained AT (skipped by stage 1b when Fashion-MNIST was missing), TRADES with 40 attack steps, and the table's extra row (ANP-VS with the per-layer sum form of V), seed 0 with AutoAttack: the frozen
# checkout's protocol lacks that row, so this uses the current code (same training results, tested)
(cd $WORK/run10c && PYTHONPATH=$WORK/run10c/src $WORK/main/.venv/bin/python -m anpvs reproduce --table mnist --scale full \
  --seeds 1 --rows pretrained_at,trades,anp_vs_sum --data-dir $WORK/shared/data/mnist --out $WORK/full_run/mnist_full --device cpu --quiet \
  --no-figures) || echo "pretrained_at, anp_vs_sum seed 0 failed"
echo "$(date -u +%H:%M:%S) pretrained_at, anp_vs_sum seed 0 done"
run() {
  local name=$1; shift
  if [ ! -f $O/$name/eval.json ]; then
    if [ -f $O/$name/checkpoint.pt ]; then $A train $D "$@" --out $O/$name --resume > $O/$name.train.log 2>&1
    else $A train $D "$@" --out $O/$name > $O/$name.train.log 2>&1; fi || { echo "$name: training failed"; return; }
    $A eval $O/$name/checkpoint.pt --quiet > $O/$name.eval.txt 2>&1 || echo "$name: eval failed"
  fi
  echo "$(date -u +%H:%M:%S) $name done"
}
run standard --method standard --epochs 2
run anp_vs --method anp_vs --init $O/standard/checkpoint.pt --set model.mask_init=2.0 --set train.mask_lr=0.1 --set method.kl_n=60000 --epochs $EP
run at --method at --epochs $EP
