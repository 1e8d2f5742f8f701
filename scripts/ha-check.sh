#!/usr/bin/env bash
# Check edge against a real, unmodified Home Assistant as its Wyoming client. PyPI's
# homeassistant needs a newer Python than Debian 12's, so it runs in a Debian root made with
# debootstrap whose Python it accepts (sid: 3.14, the newest HA; trixie: 3.13, HA up to
# 2026.2), in a venv there, headless, with a fresh config folder, HTTP on 127.0.0.1 only.
# edge runs on the host from this working tree's .venv, behind the same TCP bridge
# install.sh sets up. scripts/ha-check.py then drives both with scripts only and prints
# PASS/FAIL lines; exit 1 on a FAIL. The check runs in a network and mount namespace of its
# own (unshare): loopback and one private link, on which this machine's avahi-daemon
# publishes the records install.sh writes, for Home Assistant's zeroconf to discover.
#
#   sudo scripts/ha-check.sh             build the root (or reuse it), check, clean up
#   sudo scripts/ha-check.sh --fresh     build a new root first
#   sudo scripts/ha-check.sh --upgrade   reinstall Home Assistant (the newest) in the root
#   sudo scripts/ha-check.sh --keep      keep the work folder (edge's data, the logs)
#   HA_ROOT=DIR       where the root lives (default /var/tmp/edge-ha-root)
#   HA_SUITE=SUITE    Debian suite of the root (default sid; trixie for Python 3.13)
#   HA_VERSION=X.Y.Z  that Home Assistant release instead of the newest the root's Python takes
#
# Needs root (debootstrap, chroot) and the network (Debian's archive and PyPI) to build;
# the root (about 2 GB) is cached: a first run takes 5-10 minutes, later ones 1-2.
# Changes nothing outside HA_ROOT and a temporary work folder.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
HA_ROOT=$(realpath -m "${HA_ROOT:-/var/tmp/edge-ha-root}")
HA_SUITE=${HA_SUITE:-sid}
HA_VERSION=${HA_VERSION:-}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FRESH=0 UPGRADE=0 KEEP=()
for arg in "$@"; do
  case $arg in
    --fresh) FRESH=1 ;;
    --upgrade) UPGRADE=1 ;;
    --keep) KEEP=(--keep) ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ha-check: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "ha-check: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run as root (sudo $0): debootstrap and chroot need it"; exit 1; }
case $HA_ROOT in /|/usr|/var|/var/tmp|/tmp|/home) say "HA_ROOT=$HA_ROOT: name a folder of its own"; exit 2 ;; esac

mkdir -p "$(dirname "$HA_ROOT")"
exec 9>"$HA_ROOT.lock"  # one run at a time per root: another waits here
flock 9

source "$SRC/scripts/apt-packages.sh"
source "$SRC/scripts/chroot-root.sh"
# debootstrap builds the root; espeak-ng and sox make the speech; systemd has the bridge;
# avahi-daemon publishes what install.sh has it publish; iproute2 makes the private link
apt_ensure ha-check debootstrap espeak-ng sox systemd avahi-daemon iproute2
[ -x "$SRC/.venv/bin/python" ] || "$SRC/scripts/setup.sh" test

stop_root_processes() {  # whatever still runs inside the root (a Home Assistant left by a killed run)
  local proc
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/root" 2>/dev/null)" = "$HA_ROOT" ] && kill "${proc#/proc/}" 2>/dev/null
  done
  return 0
}
cleanup() { stop_root_processes; sleep 1; unmount_root "$HA_ROOT"; }
DRIVER="" WRAP=()
driver() {  # driver ARGS...: scripts/ha-check.py, in the background so that a signal reaches it at once
  "${WRAP[@]}" "$SRC/.venv/bin/python" "$SRC/scripts/ha-check.py" --root "$HA_ROOT" "${ENV_ARGS[@]}" "$@" &
  DRIVER=$!
  local code=0
  wait "$DRIVER" || code=$?
  DRIVER=""
  return "$code"
}
stopped() {  # let the driver stop what it started (edge, the bridges, Home Assistant), then clean up
  if [ -n "$DRIVER" ]; then kill -TERM "$DRIVER" 2>/dev/null || true; wait "$DRIVER" || true; fi
  exit 143
}
trap cleanup EXIT
trap stopped INT TERM
unmount_root "$HA_ROOT"  # a run killed before its cleanup

started=$SECONDS
if [ "$FRESH" = 1 ] || [ "$(cat "$HA_ROOT/.edge-ha-root" 2>/dev/null)" != "$HA_SUITE" ]; then
  rm -rf --one-file-system "$HA_ROOT"
  say "building a Debian $HA_SUITE root in $HA_ROOT (debootstrap; about 5 minutes)"
  # minbase plus what Home Assistant's venv needs: lru-dict, pymicro-vad and pyspeex-noise
  # build from source. debootstrap does not check the Release file's Valid-Until (sid's may be
  # past it); apt in the root would need -o Acquire::Check-Valid-Until=false.
  debootstrap --variant=minbase --include=python3,python3-venv,python3-dev,gcc,g++,ca-certificates \
    "$HA_SUITE" "$HA_ROOT" "$MIRROR" >&2
  echo "$HA_SUITE" > "$HA_ROOT/.edge-ha-root"
  say "root built in $((SECONDS - started)) s"
else
  say "reusing the $HA_SUITE root in $HA_ROOT (--fresh builds a new one)"
fi

# This machine's way out: what pip, and Home Assistant when it installs an integration's
# requirements, must use here.
host_network "$HA_ROOT"
bind_system "$HA_ROOT"
in_root() { in_chroot "$HA_ROOT" "$@"; }
ENV_ARGS=()
for pair in "${NETWORK_ENV[@]}"; do ENV_ARGS+=(--env "$pair"); done

wanted="homeassistant${HA_VERSION:+==$HA_VERSION}"
if [ "$UPGRADE" = 1 ] || [ "$(cat "$HA_ROOT/opt/ha/.edge-ha-venv" 2>/dev/null)" != "$wanted" ]; then
  step=$SECONDS
  say "installing $wanted in a venv in the root (/opt/ha; about 2 minutes)"
  rm -rf --one-file-system "$HA_ROOT/opt/ha"
  in_root python3 -m venv /opt/ha
  in_root /opt/ha/bin/pip install -q --disable-pip-version-check "$wanted" >&2 \
    || { say "pip could not install $wanted for $(in_root python3 --version) (HA_SUITE=trixie has Python 3.13)"; exit 1; }
  # The requirements of what the check sets up (the Wyoming integration's only when an entry
  # is added), pinned by Home Assistant's own constraints, so that no integration builds
  # pymicro-vad or pyspeex-noise from source inside Home Assistant's start-up timeout.
  in_root /opt/ha/bin/python - > "$HA_ROOT/opt/ha/check-requirements.txt" <<'EOF'
import json, pathlib, homeassistant
components = pathlib.Path(homeassistant.__file__).parent / "components"
todo, seen, requirements = ["wyoming", "assist_pipeline", "conversation", "recorder", "stt", "zeroconf"], set(), set()
while todo:
    domain = todo.pop()
    if domain not in seen:
        seen.add(domain)
        manifest = json.loads((components / domain / "manifest.json").read_text())
        requirements.update(manifest.get("requirements", []))
        todo += manifest.get("dependencies", []) + manifest.get("after_dependencies", [])
print("\n".join(sorted(requirements)))
EOF
  in_root sh -c 'cd /opt/ha && bin/pip install -q --disable-pip-version-check -c lib/python3*/site-packages/homeassistant/package_constraints.txt -r check-requirements.txt' >&2
  say "Home Assistant installed in $((SECONDS - step)) s; its first start (it installs what its other integrations need):"
  step=$SECONDS
  driver --warm-up
  echo "$wanted" > "$HA_ROOT/opt/ha/.edge-ha-venv"
  say "Home Assistant ready in $((SECONDS - step)) s; the root took $((SECONDS - started)) s in all"
fi

# The check itself: no network but loopback and its private link (Home Assistant has what it
# needs by now); what it mounts there (Avahi's) stays there. unshare execs: $DRIVER is the driver.
WRAP=(unshare --net --mount --propagation private --)
driver "${KEEP[@]}"
