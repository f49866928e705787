#!/bin/bash
# The CIFAR-10 models that anpvs ships (README, "Pretrained models"): the seed-0 AT and ANP-VS (V summed per layer)
# rows of the CIFAR-10 reproduction, put into the registry with their checks on 200 test images.
#
#   bash scripts/experiments/pretrained_cifar10.sh RESULTS DATA_DIR [PYTHON]
#
# RESULTS: the --out folder of `anpvs reproduce --table cifar10 --scale full --seeds 1 --data-dir DATA_DIR`
# (docs/results/cifar10/README.md: the protocol, the commands and the time it took);
# DATA_DIR: the CIFAR-10 folder of that reproduction; PYTHON: the interpreter with anpvs installed (default: python).
# The registry is written into src/anpvs/pretrained/.
set -euo pipefail
R=${1:?usage: pretrained_cifar10.sh RESULTS DATA_DIR [PYTHON]}
DATA=${2:?usage: pretrained_cifar10.sh RESULTS DATA_DIR [PYTHON]}
PY=${3:-python}
cd "$(dirname "$0")/../.."
$PY scripts/make_pretrained.py --check-data-dir "$DATA" --note "docs/results/cifar10 (the full-data CPU protocol, seed 0)" \
  cifar10/at="$R/runs/at/seed0" cifar10/anp_vs_sum="$R/runs/anp_vs_sum/seed0"
$PY -m anpvs pretrained
