#!/usr/bin/env bash
# A virtual microphone for tests and development on machines with no sound card:
# a headless PulseAudio with a null sink whose monitor is the default source.
# Whatever `paplay` plays into the sink is what sounddevice records, bit-exact.
#   eval "$(scripts/virtual-mic.sh up)"   # starts it; prints `export PULSE_SERVER=...`
#   scripts/virtual-mic.sh status | down
# VMIC_DIR (default $TMPDIR/edge-vmic) holds its socket, pid file and log.
set -euo pipefail
VMIC_DIR=${VMIC_DIR:-${TMPDIR:-/tmp}/edge-vmic}
export XDG_RUNTIME_DIR=$VMIC_DIR/runtime
export PULSE_SERVER=unix:$XDG_RUNTIME_DIR/pulse/native

need() {
  for cmd in pulseaudio pactl paplay; do
    command -v "$cmd" >/dev/null || { echo "virtual-mic: $cmd is missing; run scripts/setup.sh test" >&2; exit 1; }
  done
}

up() {
  need
  mkdir -p "$XDG_RUNTIME_DIR/pulse"
  chmod 700 "$VMIC_DIR" "$XDG_RUNTIME_DIR" "$XDG_RUNTIME_DIR/pulse"
  if ! pactl info >/dev/null 2>&1; then
    # norewinds=1 is essential: with rewinds the start of each played clip is lost.
    cat > "$VMIC_DIR/vmic.pa" <<PA
load-module module-native-protocol-unix auth-anonymous=1 socket=$XDG_RUNTIME_DIR/pulse/native
load-module module-null-sink sink_name=vmic_sink rate=16000 channels=1 format=s16le norewinds=1 sink_properties=device.description=VirtualMic
set-default-sink vmic_sink
set-default-source vmic_sink.monitor
PA
    pulseaudio -n -F "$VMIC_DIR/vmic.pa" --daemonize=yes --exit-idle-time=-1 \
      --use-pid-file=yes --log-target=file:"$VMIC_DIR/pulse.log" 2>>"$VMIC_DIR/pulse.log"
    for _ in $(seq 50); do pactl info >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  pactl info 2>/dev/null | grep -q 'Default Source: vmic_sink.monitor' \
    || { echo "virtual-mic: PulseAudio did not start; see $VMIC_DIR/pulse.log" >&2; exit 1; }
  echo "export PULSE_SERVER=$PULSE_SERVER"
}

down() {
  pulseaudio --kill >/dev/null 2>&1 || true
  for _ in $(seq 30); do pactl info >/dev/null 2>&1 || break; sleep 0.1; done
  rm -rf "$VMIC_DIR"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) pactl info && pactl list short sources ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
