#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the Debian packages img needs to build, test and benchmark.
# Run as root on Debian 12; does nothing when everything is already present.
set -e
PKGS="build-essential pkg-config clang clang-format \
liburing-dev libzstd-dev zlib1g-dev libssl-dev libfuse3-dev fuse3 \
qemu-utils nbdkit libnbd-bin fio e2fsprogs util-linux python3"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install)" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
