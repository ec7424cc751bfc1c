#!/usr/bin/env bash
# Set-up for a clean machine: a virtual environment in .venv holding torch 2.13.0 (the CPU build,
# installed first so that nothing pulls a multi-GB CUDA build) and this project with its test tools.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev]"
