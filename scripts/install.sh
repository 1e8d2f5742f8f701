#!/usr/bin/env bash
# Install edge as a hardened, network-less service on Raspberry Pi OS (bookworm) or Debian 12.
#
#   sudo scripts/install.sh               install or update (idempotent)
#   sudo scripts/install.sh --uninstall   forget everything (audited), then remove the service
#   scripts/install.sh --root DIR         stage every file under DIR; touch nothing else
#   options: --no-model (skip PyPI's Korean model; fetch one with `edge-agent model fetch`)
#            --wyoming PORT[:PROFILE] (repeatable): Wyoming speech-to-text for Home Assistant
#            on TCP PORT, as PROFILE if given (README: Use with Home Assistant)
#            --tpm: keep the root key in a TPM 2.0 (a Pi TPM HAT): the "tpm" extra, the TSS
#            libraries, the agent allowed /dev/tpmrm0 (group tss), backend = "tpm" in a
#            new config (an existing one is kept: move it with `edge-agent vault migrate`)
#
# What it does: apt dependencies; a system user `edge` (group edge, member of audio);
# the package in a venv under /opt/edge; /etc/edge/household.toml from the example
# (0640 root:edge, never overwritten); /var/lib/edge (0700 edge, and so are edge's own files
# that a command run as root left there); the systemd unit, enabled and started; a timer
# that shreds what the agent left overdue (edge-purge-overdue: a second path, README). With
# --root, the steps that change the running system (apt, users, owners, systemctl) are
# printed as "skip (--root): ..." instead.
#
# --wyoming PORT: the agent never opens a network socket; it serves the Unix socket
# /run/edge-wyoming/PORT.sock (a [[wyoming]] table appended to household.toml), and a
# socket-activated systemd-socket-proxyd (edge-wyoming-PORT.socket/.service) relays TCP
# PORT to it as the user edge-wyoming, which is not in group edge and so cannot reach the
# control socket. Avahi (avahi-daemon) advertises _wyoming._tcp on PORT.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)

ROOT=""
SYSTEM_PYTHON=${EDGE_SYSTEM_PYTHON:-/usr/bin/python3}  # tests point it at a missing file to see the refusal
ACTION=install
MODEL=1
WYOMING=()  # one PORT or PORT:PROFILE per --wyoming, checked by add_wyoming
TPM=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
add_wyoming() {  # add_wyoming PORT[:PROFILE]: check one --wyoming value, or exit 2 saying why
  local spec=$1 port=${1%%:*} profile="" given
  [ "$port" = "$spec" ] || profile=${spec#*:}
  if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || [ "$port" -gt 65535 ]; then
    echo "install: --wyoming '$spec': PORT must be a whole number from 1 to 65535, no leading zero (--wyoming PORT[:PROFILE], e.g. 10300:child)" >&2; exit 2
  fi
  if [ "$port" != "$spec" ] && ! [[ $profile =~ ^[a-z][a-z0-9_-]{0,31}$ ]]; then
    echo "install: --wyoming '$spec': PROFILE must be a profile name: a lowercase letter, then up to 31 lowercase letters, digits, '-' or '_'" >&2; exit 2
  fi
  for given in "${WYOMING[@]}"; do
    if [ "${given%%:*}" = "$port" ]; then
      echo "install: --wyoming '$spec': port $port is given twice; each listener needs its own port" >&2; exit 2
    fi
  done
  WYOMING+=("$spec")
}
while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || { echo "install: --root needs a folder" >&2; exit 2; }; ROOT=$(realpath -m "$2"); shift 2 ;;
    --uninstall) ACTION=uninstall; shift ;;
    --no-model) MODEL=0; shift ;;
    --tpm) TPM=1; shift ;;
    --wyoming) [ $# -ge 2 ] || { echo "install: --wyoming needs PORT[:PROFILE], e.g. --wyoming 10300:child" >&2; exit 2; }
      add_wyoming "$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$ACTION" = uninstall ] && [ "$TPM" = 1 ]; then
  echo "install: --tpm is for installing; --uninstall destroys the root in whichever vault the config names" >&2; exit 2
fi
if [ "$ACTION" = uninstall ] && [ ${#WYOMING[@]} -gt 0 ]; then
  echo "install: --wyoming is for installing; --uninstall removes every Wyoming bridge" >&2; exit 2
fi

OPT=$ROOT/opt/edge
ETC=$ROOT/etc/edge
DATA=$ROOT/var/lib/edge
UNITS=$ROOT/etc/systemd/system
UNIT=$UNITS/edge-agent.service
TPM_DROPIN=$UNITS/edge-agent.service.d/tpm.conf
BACKSTOP=edge-purge-overdue  # a timer and a service: shreds what the agent left overdue
BACKSTOP_DROPIN=$UNITS/$BACKSTOP.service.d/tpm.conf
AVAHI=$ROOT/etc/avahi/services
TMPFILES=$ROOT/etc/tmpfiles.d/edge-wyoming.conf
BIN=$ROOT/usr/local/bin/edge-agent

say() { echo "install: $*" >&2; }
# relocate_venv: a venv made under --root names DIR in its scripts' first lines, in activate
# and in pyvenv.cfg. Rewrite them to /opt/edge/venv, the path it has on the target, so that
# DIR can be packaged as it is. (Compiled .pyc files still name DIR in tracebacks only.)
relocate_venv() {
  local staged="$OPT/venv" file
  grep -rlIF "$staged" "$staged/bin" "$staged/pyvenv.cfg" 2>/dev/null | while IFS= read -r file; do
    sed -i "s|$staged|/opt/edge/venv|g" "$file"
  done
}

# system: run a command that changes the running system, or only show it under --root.
system() {
  if [ -n "$ROOT" ]; then say "skip (--root): $*"; else "$@"; fi
}
need_root() {
  if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root (sudo $0), or use --root DIR to stage files" >&2; exit 1
  fi
}
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
# write_file MODE FILE: stdin becomes FILE (replaced whole, so a re-run leaves one copy).
write_file() { cat > "$2.new" && chmod "$1" "$2.new" && mv -f "$2.new" "$2"; }
# from_template TEMPLATE PORT WHO NAME, avahi_record PORT: the files made from configs/*.in
source "$SRC/scripts/wyoming-templates.sh"

install_edge() {
  need_root
  check_wyoming_profiles
  source "$SRC/scripts/apt-packages.sh"
  refuse_unsupported_arch install
  local apt=("${APT_RUN[@]}")
  [ ${#WYOMING[@]} -eq 0 ] || apt+=("${APT_WYOMING[@]}")
  [ "$TPM" = 0 ] || apt+=("${APT_TPM[@]}" tpm-udev)  # tpm-udev: group tss owns /dev/tpmrm0
  if [ -n "$ROOT" ]; then
    say "skip (--root): apt-get install ${apt[*]}"
    say "skip (--root): useradd --system --user-group --home-dir /var/lib/edge --shell /usr/sbin/nologin edge"
  else
    apt_ensure install "${apt[@]}"
    getent passwd edge >/dev/null || useradd --system --user-group --home-dir /var/lib/edge --shell /usr/sbin/nologin edge
  fi
  system usermod -a -G audio edge
  [ "$TPM" = 0 ] || system usermod -a -G tss edge

  umask 022  # the program and the model are readable by the service user; data is not
  mkdir -p "$OPT" "$(dirname "$UNIT")" "$(dirname "$BIN")"
  # The system's interpreter, never the first python3 on PATH: a pyenv or conda one lives in
  # a home folder, which the unit's ProtectHome=yes hides from the service.
  [ -x "$SYSTEM_PYTHON" ] || { echo "install: $SYSTEM_PYTHON is missing: apt-get install python3 python3-venv, then run this again" >&2; exit 1; }
  [ -x "$OPT/venv/bin/python" ] || "$SYSTEM_PYTHON" -m venv "$OPT/venv"
  local extras=()
  [ "$MODEL" = 1 ] && extras+=(model)
  [ "$TPM" = 1 ] && extras+=(tpm)
  local spec="$SRC"; [ ${#extras[@]} -eq 0 ] || spec="$SRC[$(IFS=,; echo "${extras[*]}")]"
  say "installing edge into $OPT/venv"
  "$OPT/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$spec" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$OPT/venv/bin/python" -c "import edge" || { echo "install: the package did not install; see above" >&2; exit 1; }
  # The speaker encoder's weights (household voices) ship in resemblyzer's wheel; --no-deps
  # keeps torch and librosa out: edge reads only the weights file and checks its digest.
  "$OPT/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps resemblyzer==0.1.4 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$OPT/venv/bin/python" -c "from edge.voice.weights import load_weights; load_weights()" \
    || { echo "install: the speaker encoder's weights did not install (household voices need them); see above" >&2; exit 1; }
  [ -z "$ROOT" ] || relocate_venv
  install -m 0644 "$SRC/README.md" "$OPT/README.md"
  ln -sfn /opt/edge/venv/bin/edge-agent "$BIN"

  install -d -m 0750 "$ETC"
  system chown root:edge /etc/edge
  if [ ! -e "$ETC/household.toml" ]; then
    install -m 0640 "$SRC/configs/household.example.toml" "$ETC/household.toml"
    if [ "$TPM" = 1 ]; then
      sed -i -e 's|^backend = "keyring"          |backend = "tpm"              |' \
          -e 's|^# tcti = "device:/dev/tpmrm0"       |tcti = "device:/dev/tpmrm0"         |' "$ETC/household.toml"
      grep -q '^backend = "tpm"' "$ETC/household.toml" || { echo "install: could not set backend = \"tpm\" in $ETC/household.toml" >&2; exit 1; }
    elif ! "$OPT/venv/bin/python" -c 'from edge.crypto.keyring import persistent_supported as p; raise SystemExit(0 if p() else 3)' 2>/dev/null; then
      # The example's keyring vault needs persistent keyrings; without them a service restart
      # would lose the root (and so everything retained). The file vault survives restarts.
      sed -i -e 's|^backend = "keyring"          |backend = "file"             |' \
          -e 's|^# path = "/var/lib/edge/root.key"   |path = "/var/lib/edge/root.key"     |' "$ETC/household.toml"
      grep -q '^backend = "file"' "$ETC/household.toml" || { echo "install: could not set backend = \"file\" in $ETC/household.toml" >&2; exit 1; }
      say "this kernel has no persistent keyrings (Raspberry Pi OS kernels have none), so a restart would lose a key kept"
      say "in the kernel keyring: $ETC/household.toml uses the file vault instead (survives reboots and restarts;"
      say "deletion is only logical on flash). For real erasure, fit a TPM HAT and re-run with --tpm."
    fi
    say "wrote $ETC/household.toml: set each profile's retention there"
  elif [ "$TPM" = 1 ] && ! grep -Eq '^backend = "tpm"' "$ETC/household.toml"; then
    say "kept $ETC/household.toml, whose vault is not the TPM: to move its root key into the TPM, run"
    say "  systemctl stop edge-agent; sudo -u edge edge-agent vault migrate --to tpm; then set backend = \"tpm\""
  else
    say "kept the existing $ETC/household.toml"
  fi
  system chown root:edge /etc/edge/household.toml

  install -d -m 0700 "$DATA"
  chmod 0700 "$DATA"
  take_over_data
  system chown edge:edge /var/lib/edge

  # Also when the config already names a listener there (say, after --uninstall, which keeps
  # the config): without its folder the agent could not bind the socket and would not start.
  if [ ${#WYOMING[@]} -gt 0 ] || grep -Eq '^[[:space:]]*uri[[:space:]]*=[[:space:]]*"unix:///run/edge-wyoming/' "$ETC/household.toml"; then
    install_wyoming
  fi

  install -m 0644 "$SRC/configs/edge-agent.service" "$UNIT"
  install -m 0644 "$SRC/configs/$BACKSTOP.service" "$SRC/configs/$BACKSTOP.timer" "$UNITS/"
  if [ "$TPM" = 1 ]; then  # the units' device policy is closed: open the TPM's resource manager only
    local dropin
    for dropin in "$TPM_DROPIN" "$BACKSTOP_DROPIN"; do
      install -d -m 0755 "$(dirname "$dropin")"
      write_file 0644 "$dropin" <<'UNIT'
# Written by scripts/install.sh --tpm: edge keeps its root key in the TPM.
[Service]
SupplementaryGroups=tss
DeviceAllow=/dev/tpmrm0 rw
UNIT
    done
  fi
  local spec sockets=()
  for spec in "${WYOMING[@]}"; do sockets+=("edge-wyoming-${spec%%:*}.socket"); done
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --now edge-agent.service
    systemctl restart edge-agent.service  # so it binds every Wyoming socket its config names
    systemctl enable --now "$BACKSTOP.timer"
    for spec in "${sockets[@]}"; do systemctl enable --now "$spec"; done
  else
    system systemctl daemon-reload
    system systemctl enable --now edge-agent.service
    system systemctl enable --now "$BACKSTOP.timer"
    for spec in "${sockets[@]}"; do system systemctl enable --now "$spec"; done
  fi
  say "done. Check it with: edge-agent doctor; the audit log with: edge-agent audit verify"
}

# A command run as root before this install (say `sudo edge-agent purge`) leaves edge's files
# in /var/lib/edge owned by root, where the service (user edge) cannot open them. Give edge's
# own names there (docs/FORMATS.md, as the installed edge lists them) to edge, folders with
# all they hold, never through a link and nothing else; refuse, changing nothing and saying
# how to fix it, when the folder holds what the service could not use.
take_over_data() {
  [ -n "$(ls -A "$DATA")" ] || return 0
  local listing line own=() foreign=() keyring_uid=""
  listing=$("$OPT/venv/bin/python" - "$ETC/household.toml" "$DATA" <<'PY'
import sys
from pathlib import Path

from edge.config import load_config
from edge.crypto.vault import KeyringMarker
from edge.disk.layout import KEYSTORE, KEYSTORE_DB
from edge.errors import EdgeError
from edge.wiring import inventory

try:
    found = inventory(load_config(Path(sys.argv[1])), Path(sys.argv[2]))
    marker = KeyringMarker.load(Path(sys.argv[2]))
except EdgeError as exc:
    raise SystemExit(f"install: {exc}") from None
for name in found.own:
    if name != "lost+found" and "\n" not in name:  # lost+found: the file system's, not edge's
        print("own", name)
for name in [*found.foreign, *(n for n in found.own if "\n" in n)]:
    print("foreign", repr(name))
if marker is not None and {KEYSTORE, KEYSTORE_DB} & set(found.own):
    print("keyring", marker.uid)
PY
  ) || exit 1
  while IFS= read -r line; do
    case $line in
      "own "*) own+=("${line#own }") ;;
      "foreign "*) foreign+=("${line#foreign }") ;;
      "keyring "*) keyring_uid=${line#keyring } ;;
    esac
  done <<< "$listing"
  if [ ${#foreign[@]} -gt 0 ]; then
    say "/var/lib/edge holds what edge did not make: ${foreign[*]}. The agent refuses a data folder that holds"
    say "anything else (it deletes what it cannot account for there), so nothing was changed. Move them out, e.g."
    say "  sudo mv /var/lib/edge/NAME /root/   (for each name above)"
    say "then run this script again."
    exit 1
  fi
  if [ -n "$keyring_uid" ] && [ -z "$ROOT" ] && [ "$keyring_uid" != "$(id -u edge)" ]; then
    local who as="sudo"; who=$(getent passwd "$keyring_uid" | cut -d: -f1 || true)
    [ "$keyring_uid" = 0 ] || as="sudo -u ${who:-#$keyring_uid}"
    say "/var/lib/edge holds a keystore whose root key is in the kernel keyring of uid $keyring_uid (${who:-unknown}):"
    say "an edge-agent command run as that user made it, and the service (user edge) cannot reach that keyring, so"
    say "it could not open the keystore; no key can be handed over. Nothing was changed. As that user, forget what"
    say "the keystore holds (audited), destroy its root key, then remove the keystore, so the service begins afresh:"
    say "  $as edge-agent forget --all --yes"
    say "  $as /opt/edge/venv/bin/python -c 'from pathlib import Path; from edge.crypto.vault import KeyringVault; v = KeyringVault(Path(\"/var/lib/edge\")); v.erase(\"current\"); v.erase(\"next\")'"
    say "  sudo rm -f /var/lib/edge/vault /var/lib/edge/keystore.db /var/lib/edge/keystore.db-wal /var/lib/edge/keystore.db-shm"
    say "then run this script again."
    exit 1
  fi
  [ ${#own[@]} -gt 0 ] || return 0
  local paths=() name taken
  for name in "${own[@]}"; do paths+=("/var/lib/edge/$name"); done
  if [ -n "$ROOT" ]; then
    say "skip (--root): chown -hPR edge:edge ${paths[*]}"
    return 0
  fi
  # -h: a link's own owner, never its target's; -P: no link is followed into (a symlinked
  # recordings/ stays a link to wherever it points, and that place is left alone).
  taken=$(chown -c -hPR edge:edge "${paths[@]}" | wc -l)
  [ "$taken" = 0 ] || say "gave $taken of edge's own files and folders in /var/lib/edge to the service user edge (a command run as root had made them)"
}

# Before anything changes: each --wyoming PROFILE must be a profile of the config the agent
# will read (the agent refuses a [[wyoming]] table that names an unknown profile).
check_wyoming_profiles() {
  local config=$ETC/household.toml spec profile
  [ -e "$config" ] || config=$SRC/configs/household.example.toml
  for spec in "${WYOMING[@]}"; do
    [ "${spec%%:*}" != "$spec" ] || continue
    profile=${spec#*:}
    if ! grep -Eq "^[[:space:]]*\[[[:space:]]*profiles\.${profile}[[:space:]]*\]" "$config"; then
      echo "install: --wyoming $spec: $config has no [profiles.$profile]; add that profile first, or name one it has" >&2
      exit 1
    fi
  done
}

# The Wyoming listeners (--wyoming): the group their sockets get, the folder they live in,
# a [[wyoming]] table each in the config, and per port a TCP bridge and an Avahi record.
install_wyoming() {
  if [ -n "$ROOT" ]; then
    say "skip (--root): useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin edge-wyoming"
  else
    getent passwd edge-wyoming >/dev/null \
      || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin edge-wyoming
    if id -nG edge-wyoming | tr ' ' '\n' | grep -qx edge; then  # the control socket's group: never
      gpasswd -d edge-wyoming edge >/dev/null
      say "took edge-wyoming out of group edge: a Wyoming client must never reach the control socket"
    fi
  fi

  # A setgid folder: every socket the agent binds there gets group edge-wyoming.
  install -d -m 0755 "$(dirname "$TMPFILES")"
  write_file 0644 "$TMPFILES" <<'EOF'
# Written by scripts/install.sh --wyoming. The agent (user edge) binds its Wyoming sockets
# here; setgid, so each gets group edge-wyoming: the TCP bridges may connect, and they
# are not in group edge, which owns the control socket in /run/edge.
d /run/edge-wyoming 2750 edge edge-wyoming -
EOF
  system systemd-tmpfiles --create /etc/tmpfiles.d/edge-wyoming.conf

  local spec port profile who config=$ETC/household.toml
  install -d -m 0755 "$UNITS" "$AVAHI"
  for spec in "${WYOMING[@]}"; do
    port=${spec%%:*}; profile=""
    [ "$port" = "$spec" ] || profile=${spec#*:}
    who=${profile:+ (${profile})}

    if grep -Eq "^[[:space:]]*uri[[:space:]]*=[[:space:]]*\"unix:///run/edge-wyoming/$port\.sock\"" "$config"; then
      say "kept the [[wyoming]] table for port $port in $config (its profile is set there)"
    else
      [ -z "$(tail -c 1 "$config")" ] || echo >> "$config"
      {
        echo
        echo "[[wyoming]]"
        echo "uri = \"unix:///run/edge-wyoming/$port.sock\""
        [ -z "$profile" ] || echo "profile = \"$profile\""
        echo "name = \"edge (port $port${profile:+, $profile})\""
      } >> "$config"
      say "added a [[wyoming]] table to $config: unix:///run/edge-wyoming/$port.sock${profile:+, profile $profile}"
    fi

    from_template edge-wyoming.socket.in "$port" "$who" "" | write_file 0644 "$UNITS/edge-wyoming-$port.socket"
    from_template edge-wyoming.service.in "$port" "$who" "" | write_file 0644 "$UNITS/edge-wyoming-$port.service"
    avahi_record "$port" | write_file 0644 "$AVAHI/edge-wyoming-$port.service"
    say "Wyoming on TCP port $port${who}: edge-wyoming-$port.socket relays to /run/edge-wyoming/$port.sock; Avahi advertises it"
  done
}

uninstall_wyoming() {
  local file units=()
  shopt -s nullglob
  for file in "$UNITS"/edge-wyoming-*.socket "$UNITS"/edge-wyoming-*.service; do units+=("$(basename "$file")"); done
  shopt -u nullglob
  if [ ${#units[@]} -gt 0 ]; then
    if systemd_running; then
      systemctl disable --now "${units[@]}" 2>/dev/null || true
    else
      system systemctl disable --now "${units[@]}"
    fi
    say "removed the Wyoming bridges: ${units[*]}"
  fi
  rm -f "$UNITS"/edge-wyoming-*.socket "$UNITS"/edge-wyoming-*.service "$AVAHI"/edge-wyoming-*.service "$TMPFILES"
  rm -rf "$ROOT/run/edge-wyoming"
}

# A copy of the config whose paths point into ROOT (only for --root --uninstall).
staged_config() {
  local copy; copy=$(mktemp)
  sed -e "s|^data_dir = \"/var/lib/edge\"|data_dir = \"$DATA\"|" \
      -e "s|^control_socket = \"/run/edge/control.sock\"|control_socket = \"$DATA/control.sock\"|" \
      "$ETC/household.toml" > "$copy"
  echo "$copy"
}

uninstall_edge() {
  need_root
  if systemd_running; then  # the timer first: its purge must not run while the service goes
    systemctl disable --now "$BACKSTOP.timer" 2>/dev/null || true
    systemctl disable --now edge-agent.service 2>/dev/null || true
  else
    system systemctl disable --now "$BACKSTOP.timer"
    system systemctl disable --now edge-agent.service
  fi
  uninstall_wyoming
  local verified="no retained data was found to forget" agent=() config=/etc/edge/household.toml
  if [ -n "$ROOT" ]; then
    agent=("$OPT/venv/bin/python" -m edge)  # the scripts name /opt/edge/venv, where the venv will be
    [ -e "$ETC/household.toml" ] && config=$(staged_config)
  else  # as the service user: the root key is in edge's own keyring
    agent=(runuser -u edge -- "$OPT/venv/bin/edge-agent")
  fi
  if [ -n "$ROOT" ] && [ -e "$ETC/household.toml" ] && { grep -Eq '^backend = "tpm"' "$config" \
      || { grep -Eq '^keyring = "persistent"' "$config" && ! grep -Eq '^backend = "file"' "$config"; }; }; then
    # that root would be in the caller's own keyring, or in this machine's TPM: outside DIR
    say "skip (--root): edge-agent forget --all --yes (the staged config's vault, the persistent keyring or the TPM, is outside $ROOT)"
    verified="nothing was forgotten: --root touches nothing outside $ROOT"
  elif [ -x "$OPT/venv/bin/edge-agent" ] && [ -e "$ETC/household.toml" ] && [ -d "$DATA" ]; then
    say "forgetting every retained session (the audit log records it and stays in $DATA)"
    "${agent[@]}" --config "$config" forget --all --yes
    if "${agent[@]}" --config "$config" audit verify; then
      verified="the audit log that records the purge, verified above"
    else
      verified="the audit log did NOT verify: see above, and keep it for inspection"
    fi
  fi
  if [ "$config" != /etc/edge/household.toml ]; then rm -f "$config"; fi
  rm -f "$UNIT" "$TPM_DROPIN" "$UNITS/$BACKSTOP.service" "$UNITS/$BACKSTOP.timer" "$BACKSTOP_DROPIN" "$BIN"
  rmdir "$(dirname "$TPM_DROPIN")" "$(dirname "$BACKSTOP_DROPIN")" 2>/dev/null || true
  rm -rf "$OPT"
  system systemctl daemon-reload
  say "removed the service and the program. Kept: $ETC (your config, [[wyoming]] tables too) and $DATA ($verified)."
  say "Remove them by hand when you no longer need them."
}

case $ACTION in
  install) install_edge ;;
  uninstall) uninstall_edge ;;
esac
