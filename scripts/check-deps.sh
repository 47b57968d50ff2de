#!/bin/sh
# SPDX-License-Identifier: MIT
# Enforce the include-direction rules of DESIGN.md section 1:
#  lib/ includes nothing from formats/, tools/, fuse/;
#  drivers include lib/img-driver.h (or img.h), never internal.h nor another
#  driver's header; tools/ and fuse/ include only lib/img.h.
# And the rule of section 2: only lib/backend.c calls drv-> ops.
cd "$(dirname "$0")/.." || exit 2
bad=0
complain() { echo "check-deps: $1" >&2; bad=1; }
for f in $(git ls-files 'lib/*.c' 'lib/*.h'); do
	grep -nE '#include "(\.\./)?(formats|tools|fuse)/' "$f" &&
		complain "$f includes outside lib/"
done
for f in $(git ls-files 'formats/*.c' 'formats/*.h'); do
	grep -nE '#include ".*internal\.h"' "$f" &&
		complain "$f includes lib/internal.h"
	dir=$(dirname "$f")
	for inc in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
		case "$inc" in
		img.h | img-driver.h) ;;
		*) [ -f "$dir/$inc" ] || complain "$f includes $inc (not lib API nor its own driver's)" ;;
		esac
	done
done
for f in $(git ls-files 'tools/*.c' 'tools/*.h' 'fuse/*.c' 'fuse/*.h'); do
	dir=$(dirname "$f")
	for inc in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
		case "$inc" in
		img.h) ;;
		*) [ -f "$dir/$inc" ] || complain "$f includes $inc (tools may include only img.h and their own headers)" ;;
		esac
	done
done
# Only lib/backend.c calls a driver's ops, and checks what they return.
for f in $(git ls-files 'lib/*.c' 'formats/*.c' 'tools/*.c' 'fuse/*.c'); do
	[ "$f" = lib/backend.c ] && continue
	grep -nE 'drv->[a-z_]+(->[a-z_]+)?\(' "$f" &&
		complain "$f calls a driver op (only lib/backend.c may)"
done
[ $bad = 0 ] && echo "check-deps: ok"
exit $bad
