# Sourced by install.sh and ha-check.py (which checks that Home Assistant discovers the very
# record install.sh writes): the files install.sh makes from configs/*.in. Needs SRC (the
# source tree).

# from_template TEMPLATE PORT WHO NAME: configs/TEMPLATE with its @PORT@, @WHO@, @NAME@ filled in.
from_template() { sed -e "s|@PORT@|$2|g" -e "s|@WHO@|$3|g" -e "s|@NAME@|$4|g" "$SRC/configs/$1"; }

# avahi_record PORT: the Avahi service file that advertises the Wyoming listener on TCP PORT
# (_wyoming._tcp, what Home Assistant's zeroconf hands to its Wyoming integration); Avahi
# replaces %h in its name with the host's name. The name never says whose listener it is:
# mDNS tells every device on the LAN, and a profile's name may be a child's.
avahi_record() {
  from_template edge-wyoming.avahi.in "$1" "" "edge speech-to-text (port $1) on %h"
}
