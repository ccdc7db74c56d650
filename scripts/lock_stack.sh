#!/usr/bin/env bash
# Re-resolve the stack from pyproject.toml in a scratch venv and pin every installed distribution in
# constraints.txt, which scripts/setup_venv.sh installs from (`make lock`; then `make setup` and `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
PIP="$scratch/venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q "torch==2.13.0"
$PIP install -q ".[dev,qlora,app]"
DS_BUILD_OPS=0 $PIP install -q --no-build-isolation "deepspeed==0.19.8"
{
  echo "# The whole stack, pinned: scripts/setup_venv.sh installs with -c constraints.txt."
  echo "# Written by \`make lock\` (scripts/lock_stack.sh) from a fresh resolve of pyproject.toml."
  echo "# torch is pinned in pyproject.toml itself (its CPU wheel carries a local +cpu tag)."
  $PIP freeze --exclude-editable | grep -v -i -E '^(torch|vlm-finetune-launcher)(==| @)'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "lock: $(grep -c '==' constraints.txt) distributions pinned in constraints.txt"
