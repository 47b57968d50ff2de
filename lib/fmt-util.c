/* SPDX-License-Identifier: MIT */
/*
 * Helpers the VHD, VHDX, VDI and VMDK drivers share: random (version 4)
 * UUIDs for new images and conversion between UTF-8 file names and the
 * UTF-16 strings (either byte order) that VHD and VHDX parent locators hold,
 * and the write-back of a range of a 32-bit block table (VHD BAT, VDI block
 * map, VMDK grain tables).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "img-driver.h"

int img_uuid_generate(uint8_t uuid[16])
{
	size_t got = 0;

	while (got < 16) {
		ssize_t n = getrandom(uuid + got, 16 - got, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return img_error(-errno, "uuid: getrandom failed: %s",
					 strerror(errno));
		}
		got += (size_t)n;
	}
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
	return 0;
}

static void put16(uint8_t *p, uint16_t v, bool big_endian)
{
	if (big_endian)
		img_put_be16(p, v);
	else
		img_put_le16(p, v);
}

int img_utf8_to_utf16(const char *s, bool big_endian, uint8_t **out,
		      size_t *out_len)
{
	size_t n = strlen(s), k = 0;
	uint8_t *res = malloc(n * 4 + 2);

	if (!res)
		return img_error(-ENOMEM, "utf16: out of memory");
	for (size_t i = 0; i < n;) {
		uint8_t c = (uint8_t)s[i];
		uint32_t cp;
		unsigned more;

		if (c < 0x80) {
			cp = c;
			more = 0;
		} else if ((c & 0xe0) == 0xc0) {
			cp = c & 0x1f;
			more = 1;
		} else if ((c & 0xf0) == 0xe0) {
			cp = c & 0x0f;
			more = 2;
		} else if ((c & 0xf8) == 0xf0) {
			cp = c & 0x07;
			more = 3;
		} else {
			free(res);
			return img_error(-EINVAL,
					 "utf16: '%s' is not valid UTF-8", s);
		}
		if (i + more >= n) {
			free(res);
			return img_error(-EINVAL,
					 "utf16: '%s' is not valid UTF-8", s);
		}
		for (unsigned j = 1; j <= more; j++) {
			uint8_t d = (uint8_t)s[i + j];

			if ((d & 0xc0) != 0x80) {
				free(res);
				return img_error(
					-EINVAL,
					"utf16: '%s' is not valid UTF-8", s);
			}
			cp = cp << 6 | (d & 0x3f);
		}
		i += more + 1;
		if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) {
			free(res);
			return img_error(-EINVAL,
					 "utf16: '%s' is not valid UTF-8", s);
		}
		if (cp >= 0x10000) {
			cp -= 0x10000;
			put16(res + k, (uint16_t)(0xd800 | cp >> 10),
			      big_endian);
			put16(res + k + 2, (uint16_t)(0xdc00 | (cp & 0x3ff)),
			      big_endian);
			k += 4;
		} else {
			put16(res + k, (uint16_t)cp, big_endian);
			k += 2;
		}
	}
	*out = res;
	*out_len = k;
	return 0;
}

int img_utf16_to_utf8(const uint8_t *p, size_t len, bool big_endian, char **out)
{
	size_t n = len / 2, k = 0;
	char *res = malloc(n * 3 + 1);

	if (!res)
		return img_error(-ENOMEM, "utf16: out of memory");
	for (size_t i = 0; i < n; i++) {
		uint32_t cp = big_endian ? img_be16(p + 2 * i) :
					   img_le16(p + 2 * i);

		if (cp == 0)
			break;
		if (cp >= 0xd800 && cp < 0xdc00 && i + 1 < n) {
			uint32_t lo = big_endian ? img_be16(p + 2 * i + 2) :
						   img_le16(p + 2 * i + 2);

			if (lo >= 0xdc00 && lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
				i++;
			}
		}
		if (cp >= 0xd800 && cp < 0xe000) {
			free(res);
			return img_error(-IMG_ECORRUPT,
					 "utf16: unpaired surrogate %#x",
					 (unsigned)cp);
		}
		if (cp < 0x80) {
			res[k++] = (char)cp;
		} else if (cp < 0x800) {
			res[k++] = (char)(0xc0 | cp >> 6);
			res[k++] = (char)(0x80 | (cp & 0x3f));
		} else if (cp < 0x10000) {
			res[k++] = (char)(0xe0 | cp >> 12);
			res[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			res[k++] = (char)(0x80 | (cp & 0x3f));
		} else {
			res[k++] = (char)(0xf0 | cp >> 18);
			res[k++] = (char)(0x80 | ((cp >> 12) & 0x3f));
			res[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			res[k++] = (char)(0x80 | (cp & 0x3f));
		}
	}
	res[k] = '\0';
	*out = res;
	return 0;
}

int img_table32_write(struct img_io *io, const uint32_t *table, uint32_t lo,
		      uint32_t hi, uint64_t table_off, bool big_endian)
{
	uint8_t *raw = malloc((size_t)(hi - lo) * 4);
	int ret;

	if (!raw)
		return img_error(-ENOMEM, "out of memory for a table write");
	for (uint32_t i = lo; i < hi; i++) {
		if (big_endian)
			img_put_be32(raw + 4 * (i - lo), table[i]);
		else
			img_put_le32(raw + 4 * (i - lo), table[i]);
	}
	ret = img_io_pwrite(io, raw, (uint64_t)(hi - lo) * 4,
			    table_off + (uint64_t)lo * 4);
	free(raw);
	return ret;
}

void img_check_corrupt(struct img_check *res, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	res->corruptions++;
	if (!res->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	res->report(res->opaque, line);
}
