#!/usr/bin/env bash
# Style and types: ruff (lint and format) and mypy (strict) on edge and tests, zero findings
# (pyproject.toml says which files mypy reads and how test functions are relaxed).
# Sets up the test tools first (scripts/setup.sh test). CI runs this before the tests.
#   scripts/check.sh          check
#   scripts/check.sh --fix    let ruff fix what it can and format, then check
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
if [ "${1:-}" = --fix ]; then
  .venv/bin/ruff check --fix edge tests scripts
  .venv/bin/ruff format edge tests scripts
fi
.venv/bin/ruff check edge tests scripts
.venv/bin/ruff format --check edge tests scripts
.venv/bin/mypy
echo "check: ruff and mypy found nothing" >&2
