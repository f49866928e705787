#!/bin/bash
# Copy a reproduction's tables, manifest, protocol, audit and per-run records (not the checkpoints) into a
# folder of docs/results: scripts/collect_results.sh RUN_OUT DEST
set -euo pipefail
src=${1:?reproduction folder (the --out of anpvs reproduce)}; dest=${2:?destination folder}
mkdir -p "$dest"
for f in table.md table.csv table.json reproduce.json protocol.yaml audit.md audit.json; do
  [ -f "$src/$f" ] && cp "$src/$f" "$dest/"
done
[ -d "$src/figures" ] && mkdir -p "$dest/figures" && cp "$src"/figures/*.png "$src"/figures/*.json "$dest/figures/" 2>/dev/null || true
(cd "$src" && find runs -type f \( -name 'eval*.json' -o -name 'check.json' -o -name 'log.jsonl' -o -name 'config.yaml' \) ) |
  while read -r f; do mkdir -p "$dest/$(dirname "$f")"; cp "$src/$f" "$dest/$f"; done
echo "copied into $dest"
