#!/bin/sh
# Install the Debian packages the project needs, when they are missing.
# As root: installs them with apt-get. Otherwise: says which are missing
# (the tests that need them then skip, each saying why) and succeeds.
set -eu
PKGS="python3-venv openvswitch-switch mininet tcpreplay tshark iputils-ping iproute2 chromium chromium-driver openssl ieee-data libwireshark-data"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-debs: not a Debian system; missing:$missing (tests that need them will skip)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-debs: not root; missing:$missing (tests that need them will skip)"
    exit 0
fi
echo "install-debs: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no, non-interactively.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
