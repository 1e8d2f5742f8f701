#!/usr/bin/env bash
# Check edge on the userland of a Raspberry Pi: a Debian bookworm arm64 root (what 64-bit
# Raspberry Pi OS is built from) made with debootstrap and run under qemu-user-static.
# Inside it, edge is set up from this working tree exactly as the README's first command
# does on a Pi (scripts/demo.sh: the same apt list, the same venv steps), then the demo,
# `transcribe`, `doctor --no-mic` and the keyring library run, and what passed is printed.
#
#   sudo scripts/pi-check.sh            build the root (or reuse it), check, clean up mounts
#   sudo scripts/pi-check.sh --fresh    build a new root first
#   PI_ROOT=DIR                         where the root lives (default /var/tmp/edge-pi-root)
#   sudo scripts/pi-check.sh --system   boot an arm64 machine instead: a real arm64 kernel,
#                                       systemd and a TPM device (scripts/pi-system-check.sh)
#
# Needs root, the network (Debian's archive and PyPI) and binfmt_misc; says so and exits 1
# when the machine cannot provide it. Not part of .ci/run: it takes 20-40 minutes. Run it
# before resolving changes to the install, the dependencies or native code.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PI_ROOT=${PI_ROOT:-/var/tmp/edge-pi-root}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FRESH=0
for arg in "$@"; do  # --system: the booted machine's check takes the other options
  if [ "$arg" = --system ]; then
    rest=(); for arg in "$@"; do [ "$arg" = --system ] || rest+=("$arg"); done
    exec "$SRC/scripts/pi-system-check.sh" "${rest[@]}"
  fi
done
for arg in "$@"; do
  case $arg in
    --fresh) FRESH=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pi-check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "pi-check: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run as root (sudo $0): debootstrap, chroot and binfmt_misc need it"; exit 1; }

source "$SRC/scripts/apt-packages.sh"
source "$SRC/scripts/chroot-root.sh"
apt_ensure pi-check qemu-user-static binfmt-support debootstrap

cleanup() { unmount_root "$PI_ROOT"; unmount_binfmt; }
trap cleanup EXIT
enable_arm64 pi-check
unmount_root "$PI_ROOT"  # a run killed before its cleanup

if [ "$FRESH" = 1 ]; then rm -rf "$PI_ROOT"; fi
if [ ! -x "$PI_ROOT/usr/bin/bash" ] || [ ! -e "$PI_ROOT/.edge-pi-root" ]; then
  rm -rf "$PI_ROOT"
  say "building a bookworm arm64 root in $PI_ROOT (debootstrap; 10-20 minutes under emulation)"
  debootstrap --arch=arm64 --variant=minbase bookworm "$PI_ROOT" "$MIRROR" >&2
  touch "$PI_ROOT/.edge-pi-root"
else
  say "reusing the arm64 root in $PI_ROOT (--fresh builds a new one)"
fi
host_network "$PI_ROOT"
bind_system "$PI_ROOT"
copy_worktree "$SRC" "$PI_ROOT/src/edge"

results=()
check() {  # check NAME COMMAND...: run COMMAND in the arm64 root, record PASS or FAIL
  local name=$1; shift
  say "running in the arm64 root: $name"
  if in_chroot "$PI_ROOT" bash -c "cd /src/edge && $*" >&2; then
    results+=("PASS  $name")
  else
    results+=("FAIL  $name")
  fi
}
[ "$(chroot "$PI_ROOT" uname -m)" = aarch64 ] || { say "the root does not run as aarch64"; exit 1; }
check "scripts/demo.sh (the README's first command: apt list, venv, the real Korean model, the demo)" scripts/demo.sh
check "edge-agent transcribe edge/data/demo.wav" ".venv/bin/edge-agent transcribe edge/data/demo.wav"
check "edge-agent doctor --no-mic (a config from edge-agent init)" \
  "rm -rf /tmp/pi-home && .venv/bin/edge-agent init /tmp/pi-home >/dev/null && .venv/bin/edge-agent --config /tmp/pi-home/household.toml doctor --no-mic"
# qemu-user implements no keyctl (ENOSYS), so the keyring calls themselves cannot run here:
# only that the arm64 libkeyutils loads with edge's declared signatures.
check "the arm64 libkeyutils loads (keyctl itself: not emulated by qemu-user)" \
  ".venv/bin/python -c 'import ctypes.util; from edge.crypto import keyring as k; k.load_library(ctypes.util.find_library(k.LIBRARY))'"
check "the Pi's libvosk.so finds every library it links" \
  "ldd .venv/lib/python3.11/site-packages/vosk/libvosk.so | grep -v 'not found'; ! ldd .venv/lib/python3.11/site-packages/vosk/libvosk.so | grep -q 'not found'"

echo "pi-check: on $(chroot "$PI_ROOT" uname -m), Debian $(cat "$PI_ROOT/etc/debian_version"):"
printf '  %s\n' "${results[@]}"
for line in "${results[@]}"; do [[ $line == PASS* ]] || exit 1; done
