# Sourced by setup.sh and install.sh: the Debian packages edge needs, and a helper
# that installs only the missing ones.
APT_RUN=(python3 python3-venv python3-dev gcc libportaudio2 libsndfile1)
APT_TPM=(libtss2-dev pkg-config)  # the "tpm" extra: tpm2-pytss builds against the TPM Software Stack
APT_WYOMING=(avahi-daemon)  # install.sh --wyoming: advertises each listener to Home Assistant
APT_TEST=(systemd espeak-ng sox pulseaudio pulseaudio-utils libasound2-plugins age faketime openssl chromium swtpm "${APT_TPM[@]}")

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
