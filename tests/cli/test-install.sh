#!/bin/bash
# SPDX-License-Identifier: MIT
# make install into a DESTDIR, then build the C example from README.md against
# the installed header and library through pkg-config, both shared and static,
# and run it on a small raw image: the public header, libimg.pc and the
# installed libraries must be enough to use libimg.
. "$(dirname "$0")/functions.sh"
requires make cc pkg-config

dest=$T/dest
make -s -C "$top" --no-print-directory B="$BUILD" DESTDIR="$dest" install \
	>"$T/install.log" 2>&1 || {
	cat "$T/install.log"
	fail "make install failed"
}
prefix=/usr/local
for f in bin/img include/img.h lib/libimg.a lib/libimg.so lib/libimg.so.0 \
	lib/pkgconfig/libimg.pc; do
	[ -e "$dest$prefix/$f" ] || fail "make install did not install $prefix/$f"
done
[ -x "$dest$prefix/bin/img" ] || fail "installed img is not executable"

# The README's C example, verbatim: the first ```c block.
awk '/^```c$/ { on = 1; next } on && /^```$/ { exit } on' "$top/README.md" >"$T/demo.c"
[ -s "$T/demo.c" ] || fail "no \`\`\`c example in README.md"

export PKG_CONFIG_PATH=$dest$prefix/lib/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$dest
pkg-config --exists libimg || fail "pkg-config does not find libimg"
cflags=$(pkg-config --cflags libimg) || fail "pkg-config --cflags libimg"
libs=$(pkg-config --libs libimg) || fail "pkg-config --libs libimg"
slibs=$(pkg-config --static --libs libimg) || fail "pkg-config --static --libs libimg"
case "$cflags" in *"$dest"*) ;; *) fail "--cflags does not point into DESTDIR: $cflags" ;; esac

# A sanitizer build (make asan) exports its flags: the example links with them.
san=${SAN_CFLAGS:-}
cc -std=gnu11 -Wall -Wextra -Werror $san $cflags -o "$T/demo-shared" "$T/demo.c" $libs ||
	fail "README example does not compile against the installed libimg.so"
cc -std=gnu11 -Wall -Wextra -Werror $san $cflags -o "$T/demo-static" "$T/demo.c" \
	-Wl,-Bstatic -limg -Wl,-Bdynamic $(echo " $slibs " | sed 's/ -limg / /') ||
	fail "README example does not link statically against libimg.a"

# A 1 MiB raw image whose first byte is 0x5a.
head -c 1048576 /dev/zero >"$T/disk.raw"
printf 'Z' | dd of="$T/disk.raw" conv=notrunc status=none
want="$T/disk.raw: raw, first byte 0x5a"
for v in shared static; do
	if [ $v = shared ]; then
		out=$(LD_LIBRARY_PATH=$dest$prefix/lib "$T/demo-$v" "$T/disk.raw")
	else
		out=$("$T/demo-$v" "$T/disk.raw")
	fi
	rc=$?
	[ $rc = 0 ] || fail "$v example exited $rc: $out"
	[ "$out" = "$want" ] || fail "$v example printed '$out', expected '$want'"
	echo "$v: $out"
done
# The dynamic binary must really use the installed libimg.so.0.
LD_LIBRARY_PATH=$dest$prefix/lib ldd "$T/demo-shared" | grep -q "$dest$prefix/lib/libimg.so.0" ||
	fail "shared example does not load the installed libimg.so.0"
expect_exit 1 "$T/demo-static" "$T/missing.raw"
echo "install: ok"
