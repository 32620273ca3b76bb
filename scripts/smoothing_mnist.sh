#!/usr/bin/env bash
# Randomized smoothing on real MNIST for sigma 0.25 / 0.5 / 1.0 (Cohen et al. 2019's CERTIFY: N0 = 100,
# alpha = 0.001): train each base classifier with Gaussian noise (configs/smoothing_mnist.yaml), certify the
# first EXAMPLES test images with N samples (configs/eval_smoothing_mnist.yaml), then draw the curves together
# (scripts/smoothing_curve.py). One run at a time, one thread.
#   [PYTHON=.venv/bin/python] bash scripts/smoothing_mnist.sh [DATA_DIR] [OUT_ROOT] [N] [EXAMPLES]
set -euo pipefail
DATA=${1:-/root/.cache/lightning-adv/mnist}
ROOT=${2:-runs}
N=${3:-10000}
EXAMPLES=${4:-100}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
jsons=()
for sigma in 0.25 0.5 1.0; do
  name=smoothing_mnist_sigma${sigma}
  "$PYTHON" train.py fit --config configs/smoothing_mnist.yaml --data.data_dir "$DATA" \
    --model.init_args.noise_sigma "$sigma" --trainer.logger.init_args.name "$name" \
    --trainer.default_root_dir "$ROOT" --trainer.enable_progress_bar false
  run=$(ls -d "$ROOT/$name"/version_* | sort -V | tail -1)
  "$PYTHON" train.py test --config configs/smoothing_mnist.yaml --config configs/eval_smoothing_mnist.yaml \
    --data.data_dir "$DATA" --trainer.logger.init_args.name "$name" --trainer.default_root_dir "$ROOT" \
    --trainer.callbacks.init_args.sigma "$sigma" --trainer.callbacks.init_args.n "$N" \
    --trainer.callbacks.init_args.limit_examples "$EXAMPLES" --trainer.callbacks.init_args.output_dir "$run" \
    --trainer.enable_progress_bar false --ckpt_path "$run/checkpoints/last.ckpt"
  jsons+=("$run/smoothing_curve.json")
done
"$PYTHON" scripts/smoothing_curve.py "${jsons[@]}" --out "$ROOT/smoothing_mnist_curve"
