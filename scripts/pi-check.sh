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
#
# Needs root, the network (Debian's archive and PyPI) and binfmt_misc; says so and exits 1
# when the machine cannot provide it. Not part of .ci/run: it takes 20-40 minutes. Run it
# before resolving changes to the install, the dependencies or native code.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PI_ROOT=${PI_ROOT:-/var/tmp/edge-pi-root}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FRESH=0
for arg in "$@"; do
  case $arg in
    --fresh) FRESH=1 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pi-check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "pi-check: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run as root (sudo $0): debootstrap, chroot and binfmt_misc need it"; exit 1; }

source "$SRC/scripts/apt-packages.sh"
apt_ensure pi-check qemu-user-static binfmt-support debootstrap

MOUNTED=()
cleanup() {  # unmount what this script mounted, innermost first
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
    || { say "cannot mount binfmt_misc (a container without that privilege?): arm64 programs cannot run here"; exit 1; }
  MOUNTED+=(/proc/sys/fs/binfmt_misc)
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { say "binfmt_misc has no qemu-aarch64 entry (update-binfmts failed)"; exit 1; }

if [ "$FRESH" = 1 ]; then rm -rf "$PI_ROOT"; fi
if [ ! -x "$PI_ROOT/usr/bin/bash" ] || [ ! -e "$PI_ROOT/.edge-pi-root" ]; then
  rm -rf "$PI_ROOT"
  say "building a bookworm arm64 root in $PI_ROOT (debootstrap; 10-20 minutes under emulation)"
  debootstrap --arch=arm64 --variant=minbase bookworm "$PI_ROOT" "$MIRROR" >&2
  touch "$PI_ROOT/.edge-pi-root"
else
  say "reusing the arm64 root in $PI_ROOT (--fresh builds a new one)"
fi
cp /etc/resolv.conf "$PI_ROOT/etc/resolv.conf"
# This machine's way out (its proxies, and the CA bundle they need): what the root's pip and
# apt must use here, where a Pi would use its own.
NETWORK_ENV=()
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -z "${!name:-}" ] || NETWORK_ENV+=("$name=${!name}")
done
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$PI_ROOT/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$PI_ROOT/etc/ssl/certs/host-ca-certificates.crt"
  bundle=/etc/ssl/certs/host-ca-certificates.crt
  NETWORK_ENV+=("PIP_CERT=$bundle" "SSL_CERT_FILE=$bundle" "REQUESTS_CA_BUNDLE=$bundle")
fi
for fs in proc sys dev; do
  mkdir -p "$PI_ROOT/$fs"
  mount --rbind "/$fs" "$PI_ROOT/$fs" && mount --make-rslave "$PI_ROOT/$fs"
  MOUNTED+=("$PI_ROOT/$fs")
done

# The working tree as it is (committed or not), without a venv or anything git ignores.
rm -rf "$PI_ROOT/src/edge" && mkdir -p "$PI_ROOT/src/edge"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$PI_ROOT/src/edge"

results=()
check() {  # check NAME COMMAND...: run COMMAND in the arm64 root, record PASS or FAIL
  local name=$1; shift
  say "running in the arm64 root: $name"
  if chroot "$PI_ROOT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "${NETWORK_ENV[@]}" \
      bash -c "cd /src/edge && $*" >&2; then
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
