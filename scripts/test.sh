#!/usr/bin/env bash
# Sets up a fresh machine and runs every test. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DVC_NO_ANALYTICS=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python}

echo "== system packages"
# git for projects; Debian's chromium for the browser tests (no browser downloads: Playwright drives this one);
# PostgreSQL's server for the distributed-tuning test (the test starts its own server on loopback)
pkgs=()
command -v git >/dev/null || pkgs+=(git)
[ -x /usr/bin/chromium ] || pkgs+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs+=(postgresql)
if [ ${#pkgs[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] && export PATH="$PATH:$pgbin"

echo "== python packages"
# A CPU build of torch unless one is installed: a bare `torch` requirement can pull a multi-GB CUDA build.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"

echo "== notebooks and package agree"
nbdev-clean
nbdev-export
$PY scripts/readme.py --check
if [ -n "$(git status --porcelain -- nbs mlnb README.md)" ]; then
  git status --porcelain -- nbs mlnb README.md
  echo "nbdev-clean/nbdev-export changed the files above: run them (and python scripts/readme.py) and commit the result" >&2
  exit 1
fi

echo "== notebooks (nbdev-test)"
nbdev-test --n-workers 2

echo "== integration tests (pytest)"
$PY -m pytest tests --durations=30
