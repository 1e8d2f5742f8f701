#!/usr/bin/env bash
# Set up edge with the test tools and ffmpeg (vosk-transcriber needs it), then run the
# benchmarks: scripts/bench.sh [--quick] [--json FILE] [--pairs N]. A few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
source scripts/apt-packages.sh
apt_ensure bench ffmpeg
export OPENBLAS_NUM_THREADS=1  # as edge-agent sets it: numpy's small matrix products on one core
exec .venv/bin/python scripts/bench.py "$@"
