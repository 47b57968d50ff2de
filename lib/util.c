/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the core and the drivers: a fast all-zero test for
 * buffers and QEMU's rule for naming a file relative to an image (a relative
 * backing or data file name is relative to the directory of the image that
 * names it, not to the current directory), and where a sibling program is.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "img-driver.h"

bool img_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t head = len < 16 ? len : 16;

	/* Most non-zero buffers differ early: look at the first bytes, then
	 * compare the buffer with itself shifted, which memcmp does at memory
	 * bandwidth: if p[0..16) is zero and p[i] == p[i + 16] for all i,
	 * every byte is zero. */
	for (size_t i = 0; i < head; i++)
		if (p[i])
			return false;
	if (len <= 16)
		return true;
	return memcmp(p, p + 16, len - 16) == 0;
}

int img_path_relative(const char *base_path, const char *name, char **out)
{
	const char *slash;
	size_t dir_len, name_len;
	char *res;

	if (!name || !*name)
		return img_error(-EINVAL, "path: empty file name");
	if (name[0] == '/' || !base_path ||
	    !(slash = strrchr(base_path, '/'))) {
		res = strdup(name);
		if (!res)
			return img_error(-ENOMEM, "path: out of memory");
		*out = res;
		return 0;
	}
	dir_len = (size_t)(slash - base_path) + 1;
	name_len = strlen(name);
	res = malloc(dir_len + name_len + 1);
	if (!res)
		return img_error(-ENOMEM, "path: out of memory");
	memcpy(res, base_path, dir_len);
	memcpy(res + dir_len, name, name_len + 1);
	*out = res;
	return 0;
}

char *img_sibling_program(const char *name)
{
	char self[PATH_MAX], *slash, *path;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (asprintf(&path, "%s/%s", self, name) < 0)
				return NULL;
			if (!access(path, X_OK))
				return path;
			free(path);
		}
	}
	return strdup(name);
}
