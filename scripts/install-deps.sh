#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the Debian packages img needs to build, test and benchmark.
# Run as root on Debian 12; does nothing when everything is already present.
set -e
PKGS="build-essential pkg-config clang clang-format \
liburing-dev libzstd-dev zlib1g-dev libdeflate-dev libssl-dev libfuse3-dev fuse3 \
qemu-utils nbdkit libnbd-bin fio e2fsprogs util-linux python3"
# Ceph RBD backend and its tests (a throwaway cluster, QEMU's rbd driver);
# without recommends: ceph-mgr and friends are not needed.
CEPH_PKGS="ceph-mon ceph-osd ceph-common librados-dev librbd-dev qemu-block-extra"
missing=""
ceph_missing=""
for p in $PKGS $CEPH_PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" &&
		continue
	case " $CEPH_PKGS " in
	*" $p "*) ceph_missing="$ceph_missing $p" ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing$ceph_missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing$ceph_missing (run as root to install)" >&2
	exit 1
fi
echo "install-deps: installing$missing$ceph_missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
[ -z "$missing" ] || apt-get install -y -qq $missing >/dev/null
[ -z "$ceph_missing" ] ||
	apt-get install -y -qq --no-install-recommends $ceph_missing >/dev/null
