#!/usr/bin/env bash
# Builds the docs site into _docs/ (open _docs/index.html, or `python -m http.server -d _docs`): nbdev's docs processing
# of nbs/, then Sphinx with MyST-NB (all from the `dev` extra: pip install -e ".[dev]"). The Pages workflow
# (.github/workflows/docs.yml) publishes exactly this build, and tests/test_docs.py builds and checks it.
# Options (python scripts/docs_build.py --help): --out DIR, --work DIR (default _proc/), --jobs N, --force, --keep-going.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1
PY=${PYTHON:-python}
if ! "$PY" -c "import sphinx, myst_nb, furo, nbdev" 2>/dev/null; then
  echo "the docs builder is missing: pip install -e \".[dev]\"" >&2
  exit 1
fi
exec "$PY" scripts/docs_build.py "$@"
