#!/usr/bin/env bash
# Check edge on a booted arm64 machine, the closest to a Raspberry Pi this machine allows:
# qemu-system-aarch64 (machine virt, -cpu cortex-a72; TCG, no KVM) boots Debian bookworm's
# own arm64 kernel and initrd with systemd as PID 1, the root from this working tree on a
# virtio disk image, and swtpm attached as a TPM device (the kernel's tpm_tis driver and
# resource manager: /dev/tpmrm0). Debian's arm64 kernel is built without CONFIG_TCG_TIS, so
# the root gets that one driver built from Debian's linux-source-6.1 as an out-of-tree
# module (the kernel package is held at that version). scripts/pi-system-check.py then
# drives the serial console and prints a PASS/FAIL line per stage: the boot, install.sh
# --tpm --wyoming for real, a Wyoming utterance from the host through a forwarded port, the
# keyring vault's syscalls, the TPM vault across a power cycle, install.sh --uninstall.
#
#   sudo scripts/pi-check.sh --system          build the root (or reuse it), boot, check
#   sudo scripts/pi-check.sh --system --fresh  build a new root first
#   sudo scripts/pi-check.sh --system --keep   keep the work folder (disk image, console logs)
#   PI_SYSTEM_ROOT=DIR   where the root lives (default /var/tmp/edge-pi-system-root)
#
# Needs root (debootstrap, chroot, binfmt_misc for the build) and, to build, the network
# (Debian's archive and PyPI: the guest's Python packages become a wheelhouse in the root,
# which install.sh reads in the guest, which has no network). The root (about 2 GB) is
# cached: building it takes about 20 minutes, a check about 15 (see README). Not part of CI.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(realpath -m "${PI_SYSTEM_ROOT:-/var/tmp/edge-pi-system-root}")
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FRESH=0 KEEP=()
for arg in "$@"; do
  case $arg in
    --fresh) FRESH=1 ;;
    --keep) KEEP=(--keep) ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pi-check --system: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "pi-check --system: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run as root (sudo $0): debootstrap, chroot and binfmt_misc need it"; exit 1; }
case $ROOT in /|/usr|/var|/var/tmp|/tmp|/home) say "PI_SYSTEM_ROOT=$ROOT: name a folder of its own"; exit 2 ;; esac

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"  # one run at a time per root: another waits here
flock 9

source "$SRC/scripts/apt-packages.sh"
source "$SRC/scripts/chroot-root.sh"
# qemu-user-static builds the root; qemu-system-arm boots it; swtpm is its TPM; espeak-ng
# and sox make the speech the host sends
apt_ensure pi-check qemu-system-arm qemu-user-static binfmt-support debootstrap swtpm e2fsprogs espeak-ng sox
[ -x "$SRC/.venv/bin/python" ] || "$SRC/scripts/setup.sh" test

cleanup() { unmount_root "$ROOT"; unmount_binfmt; }
trap cleanup EXIT
enable_arm64 "pi-check --system"
unmount_root "$ROOT"  # a run killed before its cleanup

# The guest's packages: a systemd machine with Debian's arm64 kernel and what install.sh
# --tpm --wyoming installs with apt (scripts/apt-packages.sh: APT_RUN, APT_WYOMING, APT_TPM,
# tpm-udev), so that install.sh finds them there; the kernel headers, make and gcc build the
# TPM driver; python3-seccomp plays a kernel without persistent keyrings; tpm2-tools probes.
GUEST_PACKAGES=(systemd-sysv udev kmod dbus make iproute2 ca-certificates
  "${APT_RUN[@]}" "${APT_WYOMING[@]}" "${APT_TPM[@]}" tpm-udev keyutils tpm2-tools python3-seccomp)
KERNEL_PACKAGES=(linux-image-arm64 linux-headers-arm64)
started=$SECONDS
if [ "$FRESH" = 1 ] || [ ! -e "$ROOT/.edge-debootstrap" ]; then
  rm -rf --one-file-system "$ROOT"
  say "building a bookworm arm64 root with systemd and a kernel in $ROOT (debootstrap; about 15 minutes)"
  debootstrap --arch=arm64 --variant=minbase --include="$(IFS=,; echo "${GUEST_PACKAGES[*]}")" bookworm "$ROOT" "$MIRROR" >&2
  # The kernel comes next, with an initramfs of the few modules the virt machine needs to
  # mount its root: the default (MODULES=most) takes over half an hour under qemu-user.
  mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
  echo MODULES=list > "$ROOT/etc/initramfs-tools/conf.d/edge-pi.conf"
  printf '%s\n' virtio_mmio virtio_blk ext4 crc32c_generic >> "$ROOT/etc/initramfs-tools/modules"
  touch "$ROOT/.edge-debootstrap"
  say "debootstrap took $((SECONDS - started)) s"
else
  say "reusing the arm64 root in $ROOT (--fresh builds a new one)"
fi
host_network "$ROOT"
bind_system "$ROOT"
in_root() { in_chroot "$ROOT" "$@"; }
[ "$(in_root uname -m)" = aarch64 ] || { say "the root does not run as aarch64"; exit 1; }

if [ ! -e "$ROOT/.edge-system-ready" ]; then
  step=$SECONDS
  say "making the root a bootable machine: Debian's arm64 kernel and a TPM driver for it, the console, the network"
  in_root apt-get -qq update >&2
  DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq --fix-broken >&2  # what an interrupted build left
  DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq --no-install-recommends "${GUEST_PACKAGES[@]}" "${KERNEL_PACKAGES[@]}" >&2
  KERNEL=$(basename "$(ls -d "$ROOT"/lib/modules/*-arm64 | sort -V | tail -1)")
  # The driver: tpm_tis.c of this very kernel's source, built against its headers.
  version=$(in_root dpkg-query -W -f '${Version}' "linux-image-$KERNEL")
  rm -rf "$ROOT/usr/src/edge-tpm-tis" && mkdir -p "$ROOT/usr/src/edge-tpm-tis"
  in_root sh -c "cd /usr/src/edge-tpm-tis && apt-get download -qq linux-source-6.1=$version" >&2
  dpkg-deb --fsys-tarfile "$ROOT"/usr/src/edge-tpm-tis/linux-source-6.1_*.deb | tar -xOf - ./usr/src/linux-source-6.1.tar.xz \
    | tar -xJf - -C "$ROOT/usr/src/edge-tpm-tis" --strip-components=4 linux-source-6.1/drivers/char/tpm
  rm -f "$ROOT"/usr/src/edge-tpm-tis/linux-source-6.1_*.deb
  echo 'obj-m := tpm_tis.o' > "$ROOT/usr/src/edge-tpm-tis/Makefile"
  in_root make -s -C "/lib/modules/$KERNEL/build" M=/usr/src/edge-tpm-tis modules >&2
  install -D -m 0644 "$ROOT/usr/src/edge-tpm-tis/tpm_tis.ko" "$ROOT/lib/modules/$KERNEL/updates/tpm_tis.ko"
  in_root depmod "$KERNEL"
  in_root apt-mark hold linux-image-arm64 "linux-image-$KERNEL" linux-headers-arm64 "linux-headers-$KERNEL" >/dev/null
  # The machine: its disk, its name, root logged in on the serial console, DHCP on eth0
  # (qemu's user-mode network: the host reaches a guest port only through a forward).
  echo 'LABEL=edge-pi / ext4 defaults 0 1' > "$ROOT/etc/fstab"
  echo edge-pi > "$ROOT/etc/hostname"
  in_root passwd -d root >/dev/null
  mkdir -p "$ROOT/etc/systemd/system/serial-getty@ttyAMA0.service.d" "$ROOT/etc/systemd/network"
  cat > "$ROOT/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I dumb
EOF
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n' > "$ROOT/etc/systemd/network/eth0.network"
  in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
  echo "$KERNEL" > "$ROOT/.edge-system-ready"
  say "machine set up in $((SECONDS - step)) s"
fi
KERNEL=$(cat "$ROOT/.edge-system-ready")

# The guest's Python packages, as wheels for aarch64: install.sh in the guest, which has no
# network, installs from them (PIP_NO_INDEX, PIP_FIND_LINKS). PyPI's aarch64 wheels come with
# this machine's pip; srt (vosk's) has no wheel and tpm2-pytss only its source, so those two
# are built: srt here (pure Python), tpm2-pytss in the root under qemu-user against its TSS.
copy_worktree "$SRC" "$ROOT/src/edge"
wanted=$(sha256sum "$SRC/pyproject.toml" | cut -c1-64)
WHEELS=$ROOT/var/cache/edge-wheels
if [ "$(cat "$WHEELS/.pyproject" 2>/dev/null)" != "$wanted" ]; then
  step=$SECONDS
  say "building the guest's wheelhouse (tpm2-pytss from source under qemu-user: about 5 minutes)"
  rm -rf "$WHEELS" "$ROOT/var/cache/edge-build" && mkdir -p "$WHEELS"
  "$SRC/.venv/bin/python" -c 'import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join([*project["dependencies"], *project["optional-dependencies"]["model"], "setuptools>=61", "wheel"]))' \
    "$SRC/pyproject.toml" > "$WHEELS/requirements.txt"
  tpm=$("$SRC/.venv/bin/python" -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["tpm"])' "$SRC/pyproject.toml")
  pip=(pip_quiet "$SRC/.venv/bin/python" -m pip)
  pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; } >&2; return "${PIPESTATUS[0]}"; }  # (this machine's pip.conf)
  quiet=(-q --disable-pip-version-check)
  "${pip[@]}" wheel "${quiet[@]}" --no-deps -w "$WHEELS" srt >&2
  "${pip[@]}" download "${quiet[@]}" --only-binary=:all: --platform manylinux_2_36_aarch64 --platform manylinux2014_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 --find-links "$WHEELS" -d "$WHEELS" -r "$WHEELS/requirements.txt" >&2
  "${pip[@]}" download "${quiet[@]}" --no-deps --only-binary=:all: -d "$WHEELS" resemblyzer==0.1.4 >&2
  in_root python3 -m venv /var/cache/edge-build
  in_root /var/cache/edge-build/bin/pip wheel "${quiet[@]}" --find-links /var/cache/edge-wheels -w /var/cache/edge-wheels $tpm >&2
  rm -rf "$ROOT/var/cache/edge-build"
  echo "$wanted" > "$WHEELS/.pyproject"
  say "wheelhouse built in $((SECONDS - step)) s"
fi
unmount_root "$ROOT"

WORK=$(mktemp -d /var/tmp/edge-pi-system-XXXXXX)
step=$SECONDS
mkfs.ext4 -q -F -L edge-pi -d "$ROOT" "$WORK/disk.img" 8G
say "disk image made in $((SECONDS - step)) s (the root and this working tree in /src/edge)"
code=0
"$SRC/.venv/bin/python" "$SRC/scripts/pi-system-check.py" --work "$WORK" "${KEEP[@]}" \
  --kernel "$ROOT/boot/vmlinuz-$KERNEL" --initrd "$ROOT/boot/initrd.img-$KERNEL" --image "$WORK/disk.img" || code=$?
if [ ${#KEEP[@]} -eq 0 ]; then rm -rf "$WORK"; else say "kept $WORK (disk.img, console-*.log, swtpm state)"; fi
exit "$code"
