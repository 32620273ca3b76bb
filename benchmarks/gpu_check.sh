#!/usr/bin/env bash
# Every GPU-only check of lightning-adv, one table (docs/precision.md, benchmarks/README.md).
#
#   benchmarks/gpu_check.sh              # on a CUDA machine: under 8 minutes on one GPU (planned for an H200)
#   benchmarks/gpu_check.sh --dry-run    # CPU smoke mode: the same code paths, tiny sizes (tests/test_gpu_check.py)
#   benchmarks/gpu_check.sh --only ddp_fit,attack_bf16
#
# Exit status: 0 all rows pass, 1 a row failed (named on stderr and in the table), 2 no CUDA device.
# PYTHON selects the interpreter (default: the checkout's .venv, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
DRY=0
for a in "$@"; do [[ "$a" == "--dry-run" ]] && DRY=1; done
if [[ $DRY -eq 0 ]] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check.sh: no CUDA device (torch.cuda.is_available() is False with $PY); run it on a GPU machine, or pass --dry-run for the CPU smoke mode" >&2
  exit 2
fi
cd "$ROOT"
exec env PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$ROOT/benchmarks/gpu_check.py" "$@"
