#!/bin/bash
# The MNIST models that anpvs ships (README, "Pretrained models"), trained, evaluated and put into the registry.
# Resumable: every step is skipped when its output exists (training resumes from its last epoch), so rerun the
# same command after an interruption. About 3.5 hours on 2 idle CPU cores: the 20-epoch AT and ANP-VS runs took 42
# and 55 min for the shipped models (76 and 62 min on a shared machine in docs/results/mnist_full/long_run.md), their
# evaluations with AutoAttack about 10 min each, the five seed-0 rows of the table about 1.5 h with their evaluations.
#
#   bash scripts/experiments/pretrained_mnist.sh DATA_DIR OUT [PYTHON]
#
# DATA_DIR: the four MNIST IDX files; OUT: the folder of the runs (outside the repository); PYTHON: the
# interpreter with anpvs installed (default: python). The registry is written into src/anpvs/pretrained/.
set -euo pipefail
DATA=${1:?usage: pretrained_mnist.sh DATA_DIR OUT [PYTHON]}
OUT=${2:?usage: pretrained_mnist.sh DATA_DIR OUT [PYTHON]}
PY=${3:-python}
A="$PY -m anpvs"
HERE=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
stamp() { echo "$(date -u +%H:%M:%S) $*"; }

# 1. The 20-epoch AT and ANP-VS runs of long_run.md (the same commands), evaluated as there.
L=$OUT/long
D="--dataset mnist --data-dir $DATA --seed 0 --set train.lr_milestones=[] --val-size 5000 --pgd-steps 20 \
   --step-size 0.01 --quiet"
$A train $D --method standard --epochs 2 --out "$L/standard" --resume
$A train $D --method at --epochs 20 --out "$L/at" --resume
$A train $D --method anp_vs --init "$L/standard/checkpoint.pt" --set model.mask_init=2.0 --set train.mask_lr=0.1 \
  --set method.kl_n=60000 --epochs 20 --out "$L/anp_vs" --resume
for r in at anp_vs; do
  [ -f "$L/$r/eval.json" ] || $A eval "$L/$r/checkpoint.pt" --data-dir "$DATA" --quiet
  [ -f "$L/$r/eval_autoattack.json" ] || $A eval "$L/$r/checkpoint.pt" --data-dir "$DATA" --attack pgd \
    --attack autoattack --test-limit 1000 --no-latency --quiet --out "$L/$r/eval_autoattack.json"
  stamp "long/$r: trained and evaluated"
done

# 2. The seed-0 rows of the full-data table that a user compares against.
T=$OUT/mnist_full
$A reproduce --table mnist --scale full --seeds 1 --rows standard,at,trades,anp_vs,anp_vs_sum \
  --data-dir "$DATA" --out "$T" --no-figures --quiet
stamp "table rows: trained and evaluated"

# 3. The registry: checkpoints without training state, compacted twins, SHA-256, commands and metrics.
cd "$HERE"
NOTE="20 epochs; the commands of docs/results/mnist_full/long_run.md, retrained (scripts/experiments/pretrained_mnist.sh)"
$PY scripts/make_pretrained.py --note "$NOTE" mnist/at="$L/at" mnist/anp_vs="$L/anp_vs"
$PY scripts/make_pretrained.py mnist/table_standard="$T/runs/standard/seed0" mnist/table_at="$T/runs/at/seed0" \
  mnist/table_trades="$T/runs/trades/seed0" mnist/table_anp_vs="$T/runs/anp_vs/seed0" \
  mnist/table_anp_vs_sum="$T/runs/anp_vs_sum/seed0"
$A pretrained
