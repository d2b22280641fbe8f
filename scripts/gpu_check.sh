#!/usr/bin/env bash
# One-shot GPU measurement: paper-size alignment at K = 1, 4, 16, the official recipe in
# PyTorch on the same GPU, 100 pretraining steps; JSON under $OUT (scripts/gpu_check.py).
#
#   bash scripts/gpu_check.sh            # on the GPU machine (its JAX, flax, optax, orbax,
#                                        # chex and torch), in the repository root
#   bash scripts/gpu_check.sh --dry-run  # tiny sizes on the CPU (CI runs this)
#
# Wheels the machine lacks (e.g. ml_collections, absl-py) are installed offline from
# $WHEELS (default .wheels/: `pip download ml_collections==1.1.0 -d .wheels` beforehand and
# carry that folder).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"
WHEELS="${WHEELS:-.wheels}"
mkdir -p "$OUT"
for module in ml_collections absl; do
  if ! python -c "import $module" 2>/dev/null; then
    if [ -d "$WHEELS" ]; then
      python -m pip install -q --no-index --find-links "$WHEELS" ml_collections absl-py
    else
      echo "error: python module $module is missing and $WHEELS/ holds no wheels" >&2
      exit 1
    fi
  fi
done
export PYTHONPATH="$PWD:$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1:-}" != "--dry-run" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" || true
fi
python scripts/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
