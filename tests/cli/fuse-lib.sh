# SPDX-License-Identifier: MIT
# Sourced by the img-fuse tests (tests/cli/test-fuse-*.sh) after functions.sh:
#   fuse_requires       skip unless root, /dev/fuse, fusermount3 and img-fuse
#   fuse_mount ARGS...  run img-fuse ARGS (its last argument is the mount
#                       point), fail if it fails, unmount at exit
#   is_mounted DIR      DIR is a FUSE mount point now
#   alive PID           PID runs (a zombie does not count)
fuse_requires() {
	[ "$(id -u)" = 0 ] || skip "img-fuse tests need root (FUSE mounts)"
	[ -c /dev/fuse ] && [ -w /dev/fuse ] || skip "no usable /dev/fuse"
	requires fusermount3 "$IMG_FUSE"
}

fuse_mount() {
	local mnt=${*: -1}
	at_exit "fusermount3 -u -z '$mnt'"
	"$IMG_FUSE" "$@" || fail "img-fuse $* failed"
}

is_mounted() {
	grep -q " $(realpath "$1") fuse" /proc/self/mounts
}

# PID is a running process (not gone, not a zombie waiting for its reaper).
alive() {
	local s
	s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$s" ] && [ "${s#Z}" = "$s" ]
}
