/* SPDX-License-Identifier: MIT */
/*
 * IMG_OPEN_UNTRUSTED, the mode for images from uploads and other tenants (as
 * OpenStack's format inspector since CVE-2022-47951 and CVE-2024-32498): the
 * one wording of a refusal, so that every format says "untrusted: '<file>'
 * names <what>" the same way and frontends can show it as is, and the one cap
 * on the metadata memory an untrusted header may ask for.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

bool img_untrusted(const struct img *img)
{
	return img && (img->flags & IMG_OPEN_UNTRUSTED);
}

int img_untrusted_refuse(const struct img *img, const char *what_fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, what_fmt);
	vsnprintf(what, sizeof(what), what_fmt, ap);
	va_end(ap);
	return img_error(-EPERM, "untrusted: '%s' %s",
			 img && img->filename ? img->filename : "(image)",
			 what);
}

int img_metadata_check(const struct img *img, uint64_t bytes, const char *what)
{
	if (!img_untrusted(img) || bytes <= IMG_UNTRUSTED_METADATA_CAP)
		return 0;
	return img_untrusted_refuse(img,
				    "asks for %s of %" PRIu64
				    " bytes, above the limit "
				    "of %llu for untrusted images",
				    what, bytes, IMG_UNTRUSTED_METADATA_CAP);
}
