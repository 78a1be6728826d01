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
# MLflow from the wheel bundle (.whl/, made by tests/gpu/wheels.sh) where the image lacks it: only wheels whose
# distribution the image does not have are installed (--no-deps, into a target dir after the repo on PYTHONPATH), so
# nothing of the image (torch, numpy, protobuf...) is shadowed. If MLflow then fails to import, the run goes on untracked.
WHL_SITE=${WHL_SITE:-/tmp/mlnb-whl-site}
if compgen -G ".whl/*.whl" >/dev/null; then
  mapfile -t NEED < <($PY - .whl/*.whl <<'PYEOF'
import re, sys
from importlib import metadata
for w in sys.argv[1:]:
    name = re.sub(r'[-_.]+', '-', w.rsplit('/', 1)[-1].split('-')[0]).lower()
    try: metadata.version(name)
    except metadata.PackageNotFoundError: print(w)
PYEOF
)
  echo "wheel bundle: installing ${#NEED[@]} of $(ls .whl/*.whl | wc -l) wheels to $WHL_SITE (the image has the rest)" | tee -a "$LOG"
  if [ ${#NEED[@]} -gt 0 ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WHL_SITE" "${NEED[@]}" 2>&1 | grep -v '^WARNING: Target directory' | tail -5 | tee -a "$LOG"
    OLD_PYTHONPATH=$PYTHONPATH
    export PYTHONPATH="$PWD:$WHL_SITE${PYTHONPATH#$PWD}"
    if ! err=$($PY -c "import mlflow, sqlalchemy; from mlflow import MlflowClient; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore" 2>&1); then
      echo "wheel bundle: mlflow does not import, going on untracked: $(echo "$err" | tail -1)" | tee -a "$LOG"
      export PYTHONPATH=$OLD_PYTHONPATH
    fi
  fi
fi
$PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" 2>&1 | tee -a "$LOG"
$PY -c "import mlflow, sqlalchemy; print('tracking: on, mlflow', mlflow.__version__, 'at', mlflow.__file__)" 2>&1 | tail -1 | sed 's/^\([A-Za-z]*Error\)/tracking: off (\1)/' | tee -a "$LOG"
$PY -m pytest -q -x -p no:cacheprovider -o addopts="" tests/gpu/test_gpu_train.py 2>&1 | tail -15 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
$PY tests/gpu/train_bench.py 2>&1 | grep -E '^\{"bench"|Error|error' | tee -a "$LOG"
exit $(( rc || PIPESTATUS[0] ))
