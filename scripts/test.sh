#!/usr/bin/env bash
# Set up edge with its test tools and run the whole test suite on real parts:
# the real Vosk model, espeak-ng speech, and a PulseAudio virtual microphone
# (started and stopped by the tests themselves, see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
