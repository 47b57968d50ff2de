/* SPDX-License-Identifier: MIT */
/*
 * The VMDK text descriptor (Virtual Disk Format 1.1, section "The
 * Descriptor File"): parsing the header keys (CID, parentCID, createType,
 * parentFileNameHint), the extent lines (access, size in sectors, type,
 * file name, flat offset) and the disk database keys img reports, and
 * formatting new descriptors the way qemu-img 7.2 writes them. Extent file
 * names come from an untrusted file: names that leave the image's directory
 * (absolute, or with a ".." component) are refused unless the caller allows
 * them.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

void vmdk_desc_release(struct vmdk_desc *d)
{
	for (unsigned i = 0; i < d->n_extents; i++)
		free(d->extents[i].file);
	free(d->extents);
	free(d->create_type);
	free(d->parent_hint);
	free(d->adapter_type);
	free(d->hw_version);
	memset(d, 0, sizeof(*d));
}

static char *vmdk_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* A value, without its quotes if it has them. */
static char *vmdk_unquote(char *v)
{
	size_t n = strlen(v);

	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v[n - 1] = '\0';
		return v + 1;
	}
	return v;
}

static bool vmdk_path_safe(const char *name)
{
	const char *p = name;

	if (name[0] == '/' || name[0] == '\\')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/\\");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n;
		if (*p)
			p++;
	}
	return true;
}

static int vmdk_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

static int vmdk_parse_extent(char *line, bool any_path,
			     struct vmdk_desc_extent *x)
{
	char *access, *sectors, *type, *file = NULL, *rest, *save = NULL;

	memset(x, 0, sizeof(*x));
	access = strtok_r(line, " \t", &save);
	sectors = strtok_r(NULL, " \t", &save);
	type = strtok_r(NULL, " \t", &save);
	rest = save ? vmdk_trim(save) : NULL;
	if (!access || !sectors || !type)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: extent line '%s' is incomplete", line);
	if (!strcmp(access, "NOACCESS"))
		return img_error(-ENOTSUP,
				 "vmdk: NOACCESS extents are not supported");
	x->read_only = !strcmp(access, "RDONLY");
	if (vmdk_parse_u64(sectors, &x->sectors) ||
	    x->sectors > (UINT64_MAX >> 10))
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: extent size '%s' is not a number of sectors",
			sectors);
	if (!strcmp(type, "FLAT") || !strcmp(type, "VMFS"))
		x->type = VMDK_EXT_FLAT;
	else if (!strcmp(type, "SPARSE"))
		x->type = VMDK_EXT_SPARSE;
	else if (!strcmp(type, "ZERO"))
		x->type = VMDK_EXT_ZERO;
	else
		return img_error(-ENOTSUP, "vmdk: unsupported extent type '%s'",
				 type);
	if (x->type == VMDK_EXT_ZERO)
		return 0;
	if (!rest || rest[0] != '"')
		return img_error(-IMG_ECORRUPT,
				 "vmdk: extent line has no quoted file name");
	file = rest + 1;
	rest = strchr(file, '"');
	if (!rest)
		return img_error(-IMG_ECORRUPT,
				 "vmdk: extent file name is not terminated");
	*rest++ = '\0';
	rest = vmdk_trim(rest);
	if (!*file)
		return img_error(-IMG_ECORRUPT, "vmdk: empty extent file name");
	if (!any_path && !vmdk_path_safe(file))
		return img_error(
			-EACCES,
			"vmdk: extent file '%s' is outside the image's directory",
			file);
	if (x->type == VMDK_EXT_FLAT && *rest &&
	    (vmdk_parse_u64(rest, &x->flat_sector) ||
	     x->flat_sector > (UINT64_MAX >> 10)))
		return img_error(
			-IMG_ECORRUPT,
			"vmdk: flat extent offset '%s' is not a number", rest);
	x->file = strdup(file);
	if (!x->file)
		return img_error(-ENOMEM, "vmdk: out of memory");
	return 0;
}

static int vmdk_set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : img_error(-ENOMEM, "vmdk: out of memory");
}

static int vmdk_desc_line(char *line, bool any_path, struct vmdk_desc *d)
{
	char *eq, *key, *val;

	line = vmdk_trim(line);
	if (!*line || *line == '#')
		return 0;
	if (!strncmp(line, "RW ", 3) || !strncmp(line, "RDONLY ", 7) ||
	    !strncmp(line, "NOACCESS ", 9)) {
		struct vmdk_desc_extent *grown;
		int ret;

		if (d->n_extents >= VMDK_MAX_EXTENTS)
			return img_error(-IMG_ECORRUPT,
					 "vmdk: more than %d extents",
					 VMDK_MAX_EXTENTS);
		grown = realloc(d->extents,
				(d->n_extents + 1) * sizeof(*d->extents));
		if (!grown)
			return img_error(-ENOMEM, "vmdk: out of memory");
		d->extents = grown;
		ret = vmdk_parse_extent(line, any_path,
					&d->extents[d->n_extents]);
		if (ret < 0)
			return ret;
		d->n_extents++;
		return 0;
	}
	eq = strchr(line, '=');
	if (!eq)
		return 0; /* VMware ignores what it does not know */
	*eq = '\0';
	key = vmdk_trim(line);
	val = vmdk_unquote(vmdk_trim(eq + 1));
	if (!strcmp(key, "CID") || !strcmp(key, "parentCID")) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(val, &end, 16);
		if (errno || end == val || *end || v > UINT32_MAX)
			return img_error(
				-IMG_ECORRUPT,
				"vmdk: %s '%s' is not a 32-bit hex number", key,
				val);
		if (key[0] == 'C')
			d->cid = (uint32_t)v;
		else
			d->parent_cid = (uint32_t)v;
		return 0;
	}
	if (!strcmp(key, "createType"))
		return vmdk_set_str(&d->create_type, val);
	if (!strcmp(key, "parentFileNameHint"))
		return vmdk_set_str(&d->parent_hint, val);
	if (!strcmp(key, "ddb.adapterType"))
		return vmdk_set_str(&d->adapter_type, val);
	if (!strcmp(key, "ddb.virtualHWVersion"))
		return vmdk_set_str(&d->hw_version, val);
	return 0;
}

int vmdk_desc_parse(const char *text, size_t len, bool any_path,
		    struct vmdk_desc *d)
{
	char *copy, *line, *save = NULL;
	int ret = 0;

	memset(d, 0, sizeof(*d));
	d->parent_cid = VMDK_NO_PARENT;
	len = strnlen(text, len);
	copy = malloc(len + 1);
	if (!copy)
		return img_error(-ENOMEM, "vmdk: out of memory");
	memcpy(copy, text, len);
	copy[len] = '\0';
	for (line = strtok_r(copy, "\n", &save); line && ret >= 0;
	     line = strtok_r(NULL, "\n", &save))
		ret = vmdk_desc_line(line, any_path, d);
	free(copy);
	if (ret >= 0 && !d->n_extents)
		ret = img_error(-IMG_ECORRUPT,
				"vmdk: the descriptor lists no extent");
	if (ret >= 0 && !d->create_type)
		ret = img_error(-IMG_ECORRUPT,
				"vmdk: the descriptor has no createType");
	if (ret < 0)
		vmdk_desc_release(d);
	return ret;
}

int vmdk_desc_format(const struct vmdk_desc_opts *o,
		     const struct vmdk_desc_extent *ext, unsigned n, char **out)
{
	unsigned heads = strcmp(o->adapter_type, "ide") ? 255 : 16;
	size_t cap = 1024 + (size_t)n * 300 +
		     (o->parent_hint ? strlen(o->parent_hint) : 0);
	char *s = malloc(cap);
	size_t k;

	if (!s)
		return img_error(-ENOMEM, "vmdk: out of memory");
	k = (size_t)snprintf(s, cap,
			     "# Disk DescriptorFile\n"
			     "version=1\n"
			     "CID=%" PRIx32 "\n"
			     "parentCID=%" PRIx32 "\n"
			     "createType=\"%s\"\n",
			     o->cid, o->parent_cid, o->create_type);
	if (o->parent_hint)
		k += (size_t)snprintf(s + k, cap - k,
				      "parentFileNameHint=\"%s\"\n",
				      o->parent_hint);
	k += (size_t)snprintf(s + k, cap - k, "\n# Extent description\n");
	for (unsigned i = 0; i < n && k < cap; i++) {
		const char *t = ext[i].type == VMDK_EXT_FLAT   ? "FLAT" :
				ext[i].type == VMDK_EXT_SPARSE ? "SPARSE" :
								 "ZERO";

		k += (size_t)snprintf(s + k, cap - k,
				      "RW %" PRIu64 " %s \"%s\"",
				      ext[i].sectors, t, ext[i].file);
		if (ext[i].type == VMDK_EXT_FLAT && k < cap)
			k += (size_t)snprintf(s + k, cap - k, " %" PRIu64,
					      ext[i].flat_sector);
		if (k < cap)
			k += (size_t)snprintf(s + k, cap - k, "\n");
	}
	if (k < cap)
		k += (size_t)snprintf(s + k, cap - k,
				      "\n# The Disk Data Base\n"
				      "#DDB\n"
				      "\n"
				      "ddb.virtualHWVersion = \"%s\"\n"
				      "ddb.geometry.cylinders = \"%" PRIu64
				      "\"\n"
				      "ddb.geometry.heads = \"%u\"\n"
				      "ddb.geometry.sectors = \"63\"\n"
				      "ddb.adapterType = \"%s\"\n"
				      "ddb.toolsVersion = \"%s\"\n",
				      o->hw_version,
				      o->size / VMDK_SECTOR / (heads * 63),
				      heads, o->adapter_type, o->tools_version);
	if (k >= cap) {
		free(s);
		return img_error(-EINVAL, "vmdk: descriptor too long");
	}
	*out = s;
	return 0;
}
