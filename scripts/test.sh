#!/usr/bin/env bash
# Set up edge with its test tools and run the whole test suite on real parts:
# the real Vosk model, espeak-ng speech, and a PulseAudio virtual microphone
# (started and stopped by the tests themselves, see tests/conftest.py).
#   scripts/test.sh --quick [ARGS]   the edit loop: only the tests that need no real part
#                                    (tests/conftest.py marks the rest), on the .venv as it is
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --quick ]; then
  shift
  [ -x .venv/bin/python ] || scripts/setup.sh test
  exec .venv/bin/python -m pytest --quick "$@"
fi
scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
