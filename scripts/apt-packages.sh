# Sourced by setup.sh and install.sh: the Debian packages edge needs, and a helper
# that installs only the missing ones.
# What edge needs at run time: no compiler, so a Pi OS Lite install stays small. libatomic1:
# the aarch64 (Pi) build of libvosk.so links it; libkeyutils1: the kernel keyring vault.
APT_RUN=(python3 python3-venv libportaudio2 libsndfile1 libatomic1 libkeyutils1)
APT_BUILD=(gcc python3-dev)  # only for a dependency that PyPI has no wheel of (tpm2-pytss)
APT_TPM=("${APT_BUILD[@]}" libtss2-dev pkg-config)  # the "tpm" extra builds against the TPM Software Stack
APT_WYOMING=(avahi-daemon)  # install.sh --wyoming: advertises each listener to Home Assistant
APT_TEST=(systemd espeak-ng sox pulseaudio pulseaudio-utils libasound2-plugins age faketime openssl chromium swtpm python3-seccomp golang-go golang-golang-x-mod-dev "${APT_TPM[@]}")

SUPPORTED_ARCHES=(amd64 arm64)
refuse_unsupported_arch() {  # refuse_unsupported_arch WHO: exit 1 on a Debian architecture edge does not support
  local arch; arch=$(dpkg --print-architecture)
  local supported
  for supported in "${SUPPORTED_ARCHES[@]}"; do [ "$arch" = "$supported" ] && return 0; done
  echo "$1: this system is $arch; edge supports 64-bit Raspberry Pi OS (arm64) and Debian 12 on amd64 or arm64." >&2
  if [ "$arch" = armhf ] || [ "$arch" = armel ]; then
    echo "$1: 32-bit Pi OS has no PyPI wheels of numpy, cffi, soxr or webrtcvad-wheels, and building them on the" >&2
    echo "$1: device takes hours. Install the 64-bit Raspberry Pi OS (bookworm, arm64): it runs on the Pi 3, 4, 5 and Zero 2 W." >&2
  fi
  exit 1
}

apt_ensure() {  # apt_ensure WHO PACKAGE...
  local who=$1; shift
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "$who: installing system packages: ${missing[*]}" >&2
  echo "$who: (if another apt or dpkg is running, e.g. unattended upgrades, this waits for it, up to 10 minutes)" >&2
  local wait=(-o DPkg::Lock::Timeout=600)
  $sudo apt-get "${wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >&2
}
