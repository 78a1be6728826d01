#!/usr/bin/env bash
# Download the wheels that turn MLflow tracking on in a GPU image without MLflow and without network (see README.md).
# Into .whl/ at the repo root (git-ignored via .git/info/exclude); run.sh installs them with --no-deps into a target dir.
# Only what the image lacks: mlflow-skinny + mlflow-tracing (not the full mlflow wheel with its UI), the sqlite store
# (sqlalchemy, alembic, mako) and what these import on mlnb's path. Versions = those installed on the dev machine.
# Idempotent: wheels already there are kept; a wheel of another version of a listed package is removed.
# Env: WHL_DIR (default .whl), WHL_PY (default 3.12; 3.11 only for a local check into another WHL_DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${WHL_DIR:-.whl}
PYV=${WHL_PY:-3.12}
WHEELS=(
  mlflow-skinny==3.17.2
  mlflow-tracing==3.17.2
  sqlalchemy==2.1.9
  alembic==1.20.1
  mako==1.4.3
  cachetools==7.3.3
  sqlparse==0.6.1
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  pydantic==2.13.4
  pydantic-core==2.46.4
  annotated-types==0.7.0
  typing-inspection==0.4.2
  importlib-metadata==9.1.0
  python-dotenv==1.2.2
  fastapi==0.165.0
  starlette==1.10.0
  databricks-sdk==0.162.0
  cryptography==50.0.2
  cffi==2.0.0
  pycparser==3.0
)
if [ "$DEST" = .whl ]; then
  EXCL=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$EXCL")"
  grep -qxF '/.whl/' "$EXCL" 2>/dev/null || echo /.whl/ >> "$EXCL"
fi
mkdir -p "$DEST"
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
norm() { echo "$1" | tr 'A-Z-.' 'a-z__'; }
for spec in "${WHEELS[@]}"; do
  name=$(norm "${spec%%==*}"); ver=${spec#*==}
  # keep one version per package: drop wheels of this package with another version
  for f in "$DEST"/*.whl; do
    [ -e "$f" ] || continue
    b=$(basename "$f"); n=$(norm "${b%%-*}"); v=$(echo "$b" | cut -d- -f2)
    [ "$n" = "$name" ] && [ "$v" != "$ver" ] && rm -f "$f"
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${PLAT[@]}" -d "$DEST" "$spec"
done
ls -l "$DEST"/*.whl | awk '{printf "%9d  %s\n", $5, $NF}'
echo "total: $(du -ch "$DEST"/*.whl | tail -1 | cut -f1) in $(ls "$DEST"/*.whl | wc -l) wheels ($DEST)"
