#!/usr/bin/env bash
# Create or refresh .venv with the whole stack. Idempotent: a .venv whose stamp matches
# pyproject.toml, constraints.txt (the pinned stack) and this script is reused as is (a fresh install takes ~5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.stack-stamp
want=$(cat pyproject.toml constraints.txt scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv is current"
  exit 0
fi
echo "setup: installing the stack into $VENV (torch first: an unpinned torch would pull a CUDA build)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q "torch==2.13.0"
$PIP install -q -c constraints.txt -e ".[dev,qlora,app]"
# DeepSpeed builds no ops at install; on CPU it JIT-builds its shared-memory comm op on first use.
DS_BUILD_OPS=0 $PIP install -q -c constraints.txt --no-build-isolation "deepspeed==0.19.8"
$VENV/bin/python -c "import torch, transformers, deepspeed, peft; print('setup: torch', torch.__version__, '| transformers', transformers.__version__, '| deepspeed', deepspeed.__version__, '| peft', peft.__version__)"
echo "$want" > "$STAMP"
