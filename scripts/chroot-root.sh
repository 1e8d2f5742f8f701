# Sourced by pi-check.sh, pi-system-check.sh and ha-check.sh: what their Debian roots (made
# with debootstrap, entered with chroot) share. Needs root.

# enable_arm64 WHO: arm64 programs run here through qemu-user-static and binfmt_misc, or exit 1
# saying why. Sets BINFMT_MOUNTED=1 when it mounted binfmt_misc (unmount_binfmt undoes that).
BINFMT_MOUNTED=0
enable_arm64() {
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || { echo "$1: cannot mount binfmt_misc (a container without that privilege?): arm64 programs cannot run here" >&2; exit 1; }
    BINFMT_MOUNTED=1
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "$1: binfmt_misc has no qemu-aarch64 entry (update-binfmts failed)" >&2; exit 1; }
}
unmount_binfmt() { [ "$BINFMT_MOUNTED" = 0 ] || umount -l /proc/sys/fs/binfmt_misc 2>/dev/null || true; }

# host_network ROOT: give ROOT this machine's way out (its resolver, its proxies and the CA
# bundle they need), which the root's apt and pip must use here, where a device would use its
# own. Sets NETWORK_ENV, the NAME=VALUE pairs a command in the root needs.
NETWORK_ENV=()
host_network() {
  local root=$1 name bundle=/etc/ssl/certs/host-ca-certificates.crt
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  NETWORK_ENV=()
  for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!name:-}" ] || NETWORK_ENV+=("$name=${!name}")
  done
  if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root$bundle"
    NETWORK_ENV+=("PIP_CERT=$bundle" "SSL_CERT_FILE=$bundle" "REQUESTS_CA_BUNDLE=$bundle")
  fi
}

# in_chroot ROOT COMMAND...: COMMAND in ROOT with a clean environment plus NETWORK_ENV.
in_chroot() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "${NETWORK_ENV[@]}" "$@"
}

# bind_system ROOT: the host's /proc, /sys and /dev inside ROOT (what chroot'ed programs need).
bind_system() {
  local fs
  for fs in proc sys dev; do
    mkdir -p "$1/$fs"
    mount --rbind "/$fs" "$1/$fs" && mount --make-rslave "$1/$fs"
  done
}

# unmount_root ROOT: everything mounted under ROOT, innermost first (also what a killed run left).
unmount_root() {
  local target
  findmnt -rn -o TARGET | { grep -F "$1/" || true; } | sort -r | while read -r target; do umount -l "$target" 2>/dev/null || true; done
}

# copy_worktree SRC DEST: the working tree as it is (committed or not), without a venv or
# anything git ignores, as DEST (replaced whole).
copy_worktree() {
  rm -rf "$2" && mkdir -p "$2"
  (cd "$1" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$2"
}
