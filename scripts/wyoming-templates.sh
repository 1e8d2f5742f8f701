# Sourced by install.sh and ha-check.py (which checks that Home Assistant discovers the very
# record install.sh writes): the files install.sh makes from configs/*.in. Needs SRC (the
# source tree).

# from_template TEMPLATE PORT WHO NAME: configs/TEMPLATE with its @PORT@, @WHO@, @NAME@ filled in.
from_template() { sed -e "s|@PORT@|$2|g" -e "s|@WHO@|$3|g" -e "s|@NAME@|$4|g" "$SRC/configs/$1"; }

# avahi_record PORT [PROFILE]: the Avahi service file that advertises the Wyoming listener on
# TCP PORT (_wyoming._tcp, what Home Assistant's zeroconf hands to its Wyoming integration);
# Avahi replaces %h in its name with the host's name.
avahi_record() {
  local port=$1 profile=${2:-} name
  if [ -n "$profile" ]; then name="edge speech-to-text ($profile, port $port) on %h"
  else name="edge speech-to-text (port $port) on %h"; fi
  from_template edge-wyoming.avahi.in "$port" "${profile:+ (${profile})}" "$name"
}
