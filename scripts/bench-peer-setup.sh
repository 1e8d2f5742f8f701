#!/usr/bin/env bash
# The peer for scripts/bench-peer.py: wyoming-vosk (Home Assistant's Vosk server,
# rhasspy/wyoming-vosk; not on PyPI) in a venv of its own with its pinned requirements, and a
# data folder whose vosk-model-small-ko-0.22 (the name it gives Korean) is edge's model, so it
# never downloads one.
#   scripts/bench-peer-setup.sh SOURCE     SOURCE: a checkout of rhasspy/wyoming-vosk
#                                          (measured at aafdac2, version 1.5.0)
#   EDGE_PEER=DIR (default /tmp/edge-peer): where it goes; bench-peer.py reads the same variable.
set -euo pipefail
if [ $# -ne 1 ] || [ ! -f "$1/wyoming_vosk/__main__.py" ]; then
  echo "usage: $0 SOURCE   (SOURCE: a checkout of https://github.com/rhasspy/wyoming-vosk)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
PEER=${EDGE_PEER:-/tmp/edge-peer}
mkdir -p "$PEER/data" "$PEER/sentences"   # sentences/ stays empty: free dictation, as edge's bench config
rm -rf "$PEER/src" && cp -r "$1" "$PEER/src"
python3 -m venv "$PEER/venv"
"$PEER/venv/bin/pip" install -q -r "$PEER/src/requirements.txt"   # vosk==0.3.45 wyoming==1.5.2
"$PEER/venv/bin/pip" install -q --no-deps "$PEER/src"
MODEL=$(.venv/bin/python -c "from edge.stt.model_path import find_model; print(find_model('auto'))")
ln -sfn "$MODEL" "$PEER/data/vosk-model-small-ko-0.22"
rm -rf "$PEER/download-must-not-exist"   # bench-peer.py: its existence would mean a download was tried
"$PEER/venv/bin/pip" freeze | grep -iE '^(vosk|wyoming)'
echo "bench-peer-setup: the peer is in $PEER; now: .venv/bin/python scripts/bench-peer.py" >&2
