#!/usr/bin/env bash
# Set up edge and run its demo on the default config and the real Vosk model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
exec .venv/bin/edge-agent demo "$@"
