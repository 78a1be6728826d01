#!/usr/bin/env bash
# GPU checks for training (issue 5) as one short command: the CUDA tests, then the benchmark's JSON lines.
# Runs from any checkout of the repo without installing it (PYTHONPATH); needs torch with CUDA, transformers,
# accelerate, scikit-learn and pandas. MLflow is optional (tracking is on where it is installed).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp}/gpu_train.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOG"
$PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee -a "$LOG"
$PY -m pytest -q -x -p no:cacheprovider -o addopts="" tests/gpu/test_gpu_train.py 2>&1 | tail -15 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
$PY tests/gpu/train_bench.py 2>&1 | grep -E '^\{"bench"|Error|error' | tee -a "$LOG"
exit $(( rc || PIPESTATUS[0] ))
