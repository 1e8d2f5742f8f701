#!/usr/bin/env bash
# Set up edge and run its demo on the default config and the real Vosk model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh run
status=0
.venv/bin/edge-agent demo "$@" || status=$?
cat >&2 <<'HINT'

edge-agent is installed in .venv (not on PATH): run `.venv/bin/edge-agent --help`, or
`source .venv/bin/activate` first. To try your own household without touching the system:
    .venv/bin/edge-agent init ~/edge-try      # a config with its data and root key in ~/edge-try
HINT
exit "$status"
