/* SPDX-License-Identifier: MIT */
/*
 * The VMDK format (VMware Virtual Disk Format 1.1, as QEMU 7.2 reads and
 * writes it): an image is a text descriptor listing extents, either in its
 * own file (monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat) or
 * embedded in a hosted sparse extent (monolithicSparse, streamOptimized).
 * Extents are FLAT (a raw file from an offset), SPARSE (hosted sparse, see
 * vmdk-sparse.c) or ZERO; the guest disk is their concatenation. A
 * parentFileNameHint names a vmdk backing file.
 *
 * Supported: reading and writing all five create types, zeroed grains,
 * compressed grains with markers (in-place GD as qemu-img writes them, or
 * the GD at the end as VMware streams them), backing files. Not supported:
 * VMFS sparse (COWD) and SE sparse extents, NOACCESS extents. Created
 * streamOptimized images use VMware's stream layout (version 3 header with
 * gdOffset -1, compressed grains behind markers, then GT, GD, footer and
 * end-of-stream markers) with ddb.toolsVersion set, which ESXi imports and
 * qemu-img reads; their grains are written once, in any order, deflated
 * at zlib's default level as QEMU does. Such an image takes compressed
 * grains from convert's pipeline (img_write_compressed), so convert
 * compresses them in parallel, with or without -c.
 *
 * Extent files named in a descriptor must stay inside the image's directory
 * unless the image is opened with IMG_OPEN_ANY_EXTENT_PATH: the descriptor
 * parser refuses absolute names and ".." components, and the file is opened
 * with IMG_IO_BENEATH, so that a symlink in the directory cannot lead out
 * either. An image opened IMG_OPEN_UNTRUSTED may name no extent file and no
 * parent at all. Crash consistency: see vmdk-sparse.c; flat
 * extents are written in place.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

#define VMDK_TWO_GB (2ull << 30)
#define VMDK_DESC_HEAD "# Disk DescriptorFile"

struct vmdk {
	struct img *img;
	struct vmdk_desc desc;
	struct vmdk_extent *ext;
	unsigned n_ext;
	uint64_t size;
};

static int vmdk_probe(const uint8_t *buf, size_t len)
{
	if (len >= 4 && !memcmp(buf, VMDK_MAGIC, 4))
		return 100;
	if (len >= strlen(VMDK_DESC_HEAD) &&
	    !memcmp(buf, VMDK_DESC_HEAD, strlen(VMDK_DESC_HEAD)))
		return 100;
	return 0;
}

/*
 * Read the descriptor of io: embedded in a sparse extent (*sparse true) or
 * the whole (text) file. Returns a malloc'd NUL-terminated string.
 */
static int vmdk_read_desc(struct img_io *io, const char *name, bool *sparse,
			  char **out)
{
	uint8_t b[VMDK_SECTOR];
	uint64_t size, off = 0, len;
	char *text;
	int ret;

	ret = img_io_size(io, &size);
	if (ret < 0)
		return ret;
	memset(b, 0, sizeof(b));
	ret = img_io_pread(io, b, img_min(size, sizeof(b)), 0);
	if (ret < 0)
		return ret;
	*sparse = !memcmp(b, VMDK_MAGIC, 4);
	if (*sparse) {
		struct vmdk_sparse_hdr h;

		vmdk_hdr_decode(b, &h);
		if (h.desc_sector > size / VMDK_SECTOR ||
		    h.desc_sectors > VMDK_MAX_DESC / VMDK_SECTOR)
			return img_error(-IMG_ECORRUPT,
					 "vmdk: descriptor at sector %" PRIu64
					 " (%" PRIu64
					 " sectors) is outside '%s'",
					 h.desc_sector, h.desc_sectors, name);
		off = h.desc_sector * VMDK_SECTOR;
		len = img_min(h.desc_sectors * VMDK_SECTOR, size - off);
	} else if (!memcmp(b, "COWD", 4)) {
		return img_error(
			-ENOTSUP,
			"vmdk: '%s' is a VMFS sparse (COWD) extent: not supported",
			name);
	} else {
		if (size > VMDK_MAX_DESC)
			return img_error(
				-IMG_ECORRUPT,
				"vmdk: descriptor file '%s' is larger than 1 MiB",
				name);
		len = size;
	}
	text = malloc(len + 1);
	if (!text)
		return img_error(-ENOMEM, "vmdk: out of memory");
	ret = len ? img_io_pread(io, text, len, off) : 0;
	if (ret < 0) {
		free(text);
		return ret;
	}
	text[len] = '\0';
	*out = text;
	return 0;
}

static void vmdk_free_extents(struct vmdk *s)
{
	for (unsigned i = 0; s->ext && i < s->n_ext; i++) {
		struct vmdk_extent *e = &s->ext[i];

		if (e->type == VMDK_EXT_SPARSE)
			vmdk_sparse_close(e);
		if (e->own_io)
			img_io_close(e->io);
		free(e->file);
	}
	free(s->ext);
	s->ext = NULL;
	vmdk_desc_release(&s->desc);
}

static int vmdk_open_extent(struct vmdk *s, struct vmdk_extent *e,
			    const struct vmdk_desc_extent *x, bool writable,
			    bool any_path)
{
	struct img *img = s->img;
	int ret;

	e->type = x->type;
	e->len = x->sectors * VMDK_SECTOR;
	e->read_only = x->read_only;
	if (x->type == VMDK_EXT_ZERO)
		return 0;
	ret = img_path_relative(img_filename(img), x->file, &e->file);
	if (ret < 0)
		return ret;
	ret = img_io_open_relative(img, x->file,
				   (writable && !x->read_only ? 0 :
								IMG_IO_RDONLY) |
					   (any_path ? 0 : IMG_IO_BENEATH),
				   &e->io);
	if (ret < 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", img_last_error());
		return img_error(ret, "vmdk: extent: %s", why);
	}
	e->own_io = true;
	/* Block status names the extent's io: as the descriptor resolves
	 * (qemu-img map's "f-flat.vmdk"), not as the confined open spelled it
	 * ("./f-flat.vmdk"). */
	free(e->io->path);
	e->io->path = strdup(e->file);
	if (!e->io->path)
		return img_error(-ENOMEM, "vmdk: out of memory");
	if (x->type == VMDK_EXT_FLAT) {
		e->flat_off = x->flat_sector * VMDK_SECTOR;
		return 0;
	}
	return vmdk_sparse_open(img, e, writable && !x->read_only);
}

/* An untrusted image must be one file: a sparse extent with its embedded
 * descriptor, or a descriptor whose extents are all zero extents. */
static int vmdk_refuse_untrusted(struct vmdk *s, bool sparse)
{
	if (!img_untrusted(s->img))
		return 0;
	if (s->desc.parent_hint)
		return img_untrusted_refuse(s->img, "names a backing file '%s'",
					    s->desc.parent_hint);
	if (s->desc.parent_cid != VMDK_NO_PARENT)
		return img_untrusted_refuse(s->img,
					    "names a parent (parentCID %08x)",
					    s->desc.parent_cid);
	for (unsigned i = 0; !sparse && i < s->desc.n_extents; i++)
		if (s->desc.extents[i].type != VMDK_EXT_ZERO)
			return img_untrusted_refuse(s->img,
						    "names an extent file '%s'",
						    s->desc.extents[i].file);
	return 0;
}

static int vmdk_open(struct img *img, unsigned flags)
{
	struct vmdk *s = img_priv(img);
	bool writable = !(flags & IMG_OPEN_RDONLY), sparse;
	bool any_path = flags & IMG_OPEN_ANY_EXTENT_PATH;
	uint64_t zero_align = 1;
	char *text;
	int ret;

	s->img = img;
	ret = vmdk_read_desc(img_file(img),
			     img_filename(img) ? img_filename(img) : "(image)",
			     &sparse, &text);
	if (ret < 0)
		return ret;
	ret = vmdk_desc_parse(text, strlen(text), any_path, &s->desc);
	if (ret < 0 && sparse && !strchr(text, '=')) {
		/* A sparse extent without a descriptor: itself, whole. */
		memset(&s->desc, 0, sizeof(s->desc));
		s->desc.parent_cid = VMDK_NO_PARENT;
		ret = 0;
	}
	free(text);
	if (ret < 0)
		return ret;
	ret = vmdk_refuse_untrusted(s, sparse);
	if (ret < 0)
		goto fail;
	s->n_ext = sparse ? 1 : s->desc.n_extents;
	s->ext = calloc(s->n_ext, sizeof(*s->ext));
	if (!s->ext) {
		ret = img_error(-ENOMEM, "vmdk: out of memory");
		goto fail;
	}
	if (sparse) {
		/* The embedded descriptor describes this file (QEMU ignores
		 * its extent lines too). */
		struct vmdk_extent *e = &s->ext[0];

		e->type = VMDK_EXT_SPARSE;
		e->io = img_file(img);
		e->file = strdup(img_filename(img) ? img_filename(img) : "");
		if (!e->file) {
			ret = img_error(-ENOMEM, "vmdk: out of memory");
			goto fail;
		}
		ret = vmdk_sparse_open(img, e, writable);
		if (ret < 0)
			goto fail;
	} else {
		for (unsigned i = 0; i < s->n_ext; i++) {
			ret = vmdk_open_extent(s, &s->ext[i],
					       &s->desc.extents[i], writable,
					       any_path);
			if (ret < 0)
				goto fail;
		}
	}
	for (unsigned i = 0; i < s->n_ext; i++) {
		s->ext[i].start = s->size;
		if (s->size + s->ext[i].len < s->size ||
		    s->size + s->ext[i].len > INT64_MAX) {
			ret = img_error(
				-IMG_ECORRUPT,
				"vmdk: the extents add up to more than 2^63 bytes");
			goto fail;
		}
		s->size += s->ext[i].len;
	}
	if (s->desc.parent_hint) {
		ret = img_set_backing_name(img, s->desc.parent_hint, "vmdk");
		if (ret < 0)
			goto fail;
	}
	img_set_size(img, s->size);
	/* Whole grains zero by metadata: the core sends the rest alone. */
	for (unsigned i = 0; i < s->n_ext; i++)
		if (s->ext[i].type == VMDK_EXT_SPARSE)
			zero_align = s->ext[i].grain_size > zero_align ?
					     s->ext[i].grain_size :
					     zero_align;
	img_set_zero_align(img, zero_align);
	return 0;
fail:
	vmdk_free_extents(s);
	return ret;
}

static void vmdk_close(struct img *img)
{
	vmdk_free_extents(img_priv(img));
}

/* The extent holding guest offset off. */
static struct vmdk_extent *vmdk_find(struct vmdk *s, uint64_t off)
{
	unsigned lo = 0, hi = s->n_ext;

	while (hi - lo > 1) {
		unsigned mid = (lo + hi) / 2;

		if (s->ext[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	/* Skip empty extents. */
	while (lo + 1 < s->n_ext && s->ext[lo].start + s->ext[lo].len <= off)
		lo++;
	return &s->ext[lo];
}

/*
 * A streamOptimized image stores only compressed grains: 1 tells convert
 * to compress (in parallel) without -c. Other subformats cannot. From now
 * on whole grains given to write() are taken as the ones the pipeline
 * could not shrink.
 */
static int vmdk_compress_params(struct img *img, enum img_compress_type *type,
				uint64_t *cluster_size)
{
	struct vmdk *s = img_priv(img);

	if (s->n_ext != 1 || s->ext[0].type != VMDK_EXT_SPARSE ||
	    !s->ext[0].compressed)
		return img_error(
			-ENOTSUP,
			"vmdk: compressed writes need subformat=streamOptimized");
	*type = IMG_COMPRESS_DEFLATE_ZLIB;
	*cluster_size = s->ext[0].grain_size;
	s->ext[0].pipeline = true;
	return 1;
}

static int vmdk_write_compressed(struct img *img,
				 const struct img_compressed *v, size_t n)
{
	struct vmdk *s = img_priv(img);
	int ret = 0;

	for (size_t i = 0; i < n && ret >= 0; i++)
		ret = vmdk_sparse_write_compressed(img, &s->ext[0], v[i].off,
						   v[i].data, v[i].len);
	return ret;
}

/*
 * Zeroing is metadata only (zeroed grains, or grains that read as zeroes
 * already): everything or nothing, so that a range the driver cannot do
 * (flat extents, partial grains with data) is left to the core, which
 * writes zeroes through the write map.
 */
static int vmdk_zero(struct img *img, uint64_t off, uint64_t len,
		     unsigned flags)
{
	struct vmdk *s = img_priv(img);

	/* As QEMU's vmdk: discard keeps the data. */
	if (flags & IMG_ZERO_DISCARD)
		return 0;
	if (flags & IMG_ZERO_FAST)
		for (unsigned i = 0; i < s->n_ext; i++)
			if (s->ext[i].type == VMDK_EXT_SPARSE &&
			    !s->ext[i].zero_grain)
				return img_error(
					-ENOTSUP,
					"vmdk: no fast zeroing without zeroed grains");
	for (int apply = 0; apply < 2; apply++) {
		for (uint64_t pos = off; pos < off + len;) {
			struct vmdk_extent *e = vmdk_find(s, pos);
			uint64_t in = pos - e->start;
			uint64_t n = img_min(off + len - pos, e->len - in);
			int ret;

			if (e->read_only || e->type == VMDK_EXT_ZERO)
				return img_error(
					-EROFS,
					"vmdk: extent '%s' is read-only",
					e->file ? e->file : "ZERO");
			if (e->type == VMDK_EXT_FLAT)
				return img_error(
					-ENOTSUP,
					"vmdk: zeroing flat extent '%s' writes zeroes",
					e->file);
			ret = vmdk_sparse_zero(img, e, in, n, apply);
			if (ret < 0)
				return ret;
			pos += n;
		}
	}
	return 0;
}

static int vmdk_flush(struct img *img)
{
	struct vmdk *s = img_priv(img);
	int ret;

	for (unsigned i = 0; i < s->n_ext; i++) {
		struct vmdk_extent *e = &s->ext[i];

		if (e->type == VMDK_EXT_SPARSE && !e->read_only) {
			ret = vmdk_sparse_flush(img, e);
			if (ret < 0)
				return ret;
		}
		if (e->io && !e->read_only) {
			ret = img_io_flush(e->io);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Within one extent: each extent's own file, grains of a sparse one. */
static int vmdk_map(struct img *img, uint64_t off, uint64_t len,
		    struct img_map *m)
{
	struct vmdk *s = img_priv(img);
	struct vmdk_extent *e = vmdk_find(s, off);
	uint64_t in = off - e->start;
	int ret;

	len = img_min(len, e->len - in);
	if (m->write != IMG_MAP_NO_WRITE &&
	    (e->read_only || e->type == VMDK_EXT_ZERO))
		return img_error(-EROFS, "vmdk: extent '%s' is read-only",
				 e->file ? e->file : "ZERO");
	switch (e->type) {
	case VMDK_EXT_ZERO:
		m->len = len;
		m->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
		return 0;
	case VMDK_EXT_FLAT:
		m->len = len;
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->io = e->io;
		m->file_off = e->flat_off + in;
		return 0;
	case VMDK_EXT_SPARSE:
		break;
	}
	if (m->write == IMG_MAP_NO_WRITE)
		return vmdk_sparse_map(img, e, in, len, m);
	ret = vmdk_sparse_map_write(img, e, in, len, m);
	if (ret >= 0 && m->region_len)
		m->region_off += e->start;
	return ret;
}

static void vmdk_field(struct img_info *info, const char *key,
		       enum img_value_type type, const char *str, uint64_t v)
{
	struct img_field *f;

	if (info->n_fields >= IMG_INFO_MAX_FIELDS)
		return;
	f = &info->fields[info->n_fields++];
	f->key = key;
	f->type = type;
	f->str = str;
	f->u64 = v;
}

static int vmdk_info(struct img *img, struct img_info *info)
{
	struct vmdk *s = img_priv(img);

	for (unsigned i = 0; i < s->n_ext; i++)
		if (s->ext[i].type == VMDK_EXT_SPARSE) {
			info->cluster_size = s->ext[i].grain_size;
			break;
		}
	vmdk_field(info, "cid", IMG_VAL_U64, NULL, s->desc.cid);
	vmdk_field(info, "parent-cid", IMG_VAL_U64, NULL, s->desc.parent_cid);
	if (s->desc.create_type)
		vmdk_field(info, "create-type", IMG_VAL_STR,
			   s->desc.create_type, 0);
	return 0;
}

static int vmdk_check(struct img *img, unsigned flags, struct img_check *res)
{
	struct vmdk *s = img_priv(img);
	int ret;

	for (unsigned i = 0; i < s->n_ext; i++) {
		if (s->ext[i].type != VMDK_EXT_SPARSE)
			continue;
		ret = vmdk_sparse_check(&s->ext[i], res);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- create ---- */

struct vmdk_create_args {
	const char *subformat;
	const char *adapter_type;
	const char *hw_version;
	const char *tools_version;
	bool compat6;
	bool zeroed_grain;
};

static int vmdk_create_args(const struct img_create_opts *opts,
			    struct vmdk_create_args *a)
{
	static const char *const subformats[] = {
		"monolithicSparse",   "monolithicFlat",	 "twoGbMaxExtentSparse",
		"twoGbMaxExtentFlat", "streamOptimized",
	};
	static const char *const adapters[] = { "ide", "lsilogic", "buslogic",
						"legacyESX" };
	const char *prealloc = "off";
	bool hw_given = false;
	size_t i;
	int ret;

	memset(a, 0, sizeof(*a));
	a->subformat = "monolithicSparse";
	a->adapter_type = "ide";
	a->hw_version = "4";
	a->tools_version = "2147483647";
	if ((ret = img_opt_str(opts, "subformat", &a->subformat)) < 0 ||
	    (ret = img_opt_str(opts, "adapter_type", &a->adapter_type)) < 0 ||
	    (ret = img_opt_str(opts, "hwversion", &a->hw_version)) < 0 ||
	    (hw_given = ret > 0, false) ||
	    (ret = img_opt_str(opts, "toolsversion", &a->tools_version)) < 0 ||
	    (ret = img_opt_bool(opts, "compat6", &a->compat6)) < 0 ||
	    (ret = img_opt_bool(opts, "zeroed_grain", &a->zeroed_grain)) < 0 ||
	    (ret = img_opt_str(opts, "preallocation", &prealloc)) < 0)
		return ret;
	for (i = 0; i < IMG_ARRAY_SIZE(subformats); i++)
		if (!strcmp(a->subformat, subformats[i]))
			break;
	if (i == IMG_ARRAY_SIZE(subformats))
		return img_error(-EINVAL, "vmdk: unknown subformat: %s",
				 a->subformat);
	for (i = 0; i < IMG_ARRAY_SIZE(adapters); i++)
		if (!strcmp(a->adapter_type, adapters[i]))
			break;
	if (i == IMG_ARRAY_SIZE(adapters))
		return img_error(
			-EINVAL,
			"vmdk: unknown adapter type: '%s' (ide, lsilogic, buslogic, legacyESX)",
			a->adapter_type);
	if (a->compat6 && hw_given)
		return img_error(
			-EINVAL,
			"vmdk: hwversion and compat6 cannot both be given");
	if (a->compat6)
		a->hw_version = "6";
	if (strcmp(prealloc, "off"))
		return img_error(
			-EINVAL,
			"vmdk: preallocation '%s' is not supported (off)",
			prealloc);
	if (strpbrk(a->hw_version, "\"\n") || strpbrk(a->tools_version, "\"\n"))
		return img_error(-EINVAL,
				 "vmdk: bad hwversion or toolsversion");
	if (opts->backing_fmt && strcmp(opts->backing_fmt, "vmdk"))
		return img_error(
			-EINVAL,
			"vmdk: backing format must be 'vmdk', not '%s'",
			opts->backing_fmt);
	return 0;
}

/* The parent's CID, from its descriptor. */
static int vmdk_parent_cid(const char *path, const char *backing, uint32_t *cid)
{
	struct vmdk_desc d;
	struct img_io *io;
	char *ppath, *text;
	bool sparse;
	int ret;

	ret = img_path_relative(path, backing, &ppath);
	if (ret < 0)
		return ret;
	ret = img_io_open(ppath, IMG_IO_RDONLY, IMG_IO_AUTO, &io);
	if (ret < 0) {
		img_error(ret, "vmdk: could not open parent '%s': %s", ppath,
			  strerror(-ret));
		free(ppath);
		return ret;
	}
	ret = vmdk_read_desc(io, ppath, &sparse, &text);
	img_io_close(io);
	free(ppath);
	if (ret < 0)
		return ret;
	ret = vmdk_desc_parse(text, strlen(text), true, &d);
	free(text);
	if (ret < 0)
		return ret;
	*cid = d.cid;
	vmdk_desc_release(&d);
	return 0;
}

/* The directory part of path (with its slash) and the file's base name
 * without a ".vmdk" suffix. */
static int vmdk_split_name(const char *path, char **dir, char **base)
{
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	size_t n = strlen(name);

	if (n > 5 && !strcmp(name + n - 5, ".vmdk"))
		n -= 5;
	*dir = strndup(path, (size_t)(name - path));
	*base = strndup(name, n);
	if (!*dir || !*base) {
		free(*dir);
		free(*base);
		return img_error(-ENOMEM, "vmdk: out of memory");
	}
	return 0;
}

/* Create the extent files of a split or flat image. */
static int vmdk_create_extents(const char *dir, struct vmdk_desc_extent *x,
			       unsigned n, bool flat)
{
	int ret = 0;

	for (unsigned i = 0; i < n && ret >= 0; i++) {
		struct img_io *io;
		char *p = malloc(strlen(dir) + strlen(x[i].file) + 1);

		if (!p)
			return img_error(-ENOMEM, "vmdk: out of memory");
		sprintf(p, "%s%s", dir, x[i].file);
		ret = img_io_open(p, IMG_IO_CREATE, IMG_IO_AUTO, &io);
		if (ret < 0) {
			img_error(ret, "vmdk: could not create '%s': %s", p,
				  strerror(-ret));
			free(p);
			return ret;
		}
		free(p);
		if (flat)
			ret = img_io_truncate(io, x[i].sectors * VMDK_SECTOR);
		else
			ret = vmdk_sparse_create(io, x[i].sectors * VMDK_SECTOR,
						 false, false, NULL);
		if (ret >= 0)
			ret = img_io_flush(io);
		img_io_close(io);
	}
	return ret;
}

static int vmdk_create(const char *path, struct img_io *file,
		       const struct img_create_opts *opts)
{
	struct vmdk_create_args a;
	struct vmdk_desc_opts d = { 0 };
	struct vmdk_desc_extent *x = NULL;
	char *dir = NULL, *base = NULL, *desc = NULL;
	bool split, flat, embedded;
	uint8_t rnd[16];
	unsigned n = 0;
	int ret;

	ret = vmdk_create_args(opts, &a);
	if (ret < 0)
		return ret;
	ret = img_uuid_generate(rnd);
	if (ret < 0)
		return ret;
	d.cid = img_le32(rnd);
	d.parent_cid = VMDK_NO_PARENT;
	if (opts->backing_file) {
		ret = vmdk_parent_cid(path, opts->backing_file, &d.parent_cid);
		if (ret < 0)
			return ret;
		d.parent_hint = opts->backing_file;
	}
	d.create_type = a.subformat;
	d.hw_version = a.hw_version;
	d.adapter_type = a.adapter_type;
	d.tools_version = a.tools_version;
	d.size = opts->size;
	split = strstr(a.subformat, "twoGb") != NULL;
	flat = strstr(a.subformat, "Flat") != NULL;
	embedded = !split && !flat;
	ret = vmdk_split_name(path ? path : "image.vmdk", &dir, &base);
	if (ret < 0)
		return ret;
	n = split ? (unsigned)((opts->size + VMDK_TWO_GB - 1) / VMDK_TWO_GB) :
		    1;
	if (!n)
		n = 1;
	if (split && (opts->size + VMDK_TWO_GB - 1) / VMDK_TWO_GB > 9999) {
		ret = img_error(-EINVAL, "vmdk: size %" PRIu64 " is too large",
				opts->size);
		goto out;
	}
	x = calloc(n, sizeof(*x));
	if (!x) {
		ret = img_error(-ENOMEM, "vmdk: out of memory");
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t left = opts->size - (uint64_t)i * VMDK_TWO_GB;

		x[i].type = flat ? VMDK_EXT_FLAT : VMDK_EXT_SPARSE;
		x[i].sectors =
			(split ? img_min(left, VMDK_TWO_GB) : opts->size) /
			VMDK_SECTOR;
		x[i].file = malloc(strlen(base) + 16);
		if (!x[i].file) {
			ret = img_error(-ENOMEM, "vmdk: out of memory");
			goto out;
		}
		if (embedded)
			sprintf(x[i].file, "%s.vmdk", base);
		else if (split)
			sprintf(x[i].file, "%s-%c%03u.vmdk", base,
				flat ? 'f' : 's', i + 1);
		else
			sprintf(x[i].file, "%s-flat.vmdk", base);
	}
	if (embedded && path) {
		/* The extent line names the image file as it is called. */
		const char *slash = strrchr(path, '/');

		free(x[0].file);
		x[0].file = strdup(slash ? slash + 1 : path);
		if (!x[0].file) {
			ret = img_error(-ENOMEM, "vmdk: out of memory");
			goto out;
		}
	}
	ret = vmdk_desc_format(&d, x, n, &desc);
	if (ret < 0)
		goto out;
	if (embedded) {
		ret = vmdk_sparse_create(file, opts->size,
					 !strcmp(a.subformat,
						 "streamOptimized"),
					 a.zeroed_grain, desc);
		goto out;
	}
	ret = vmdk_create_extents(dir, x, n, flat);
	if (ret >= 0)
		ret = img_io_truncate(file, 0);
	if (ret >= 0)
		ret = img_io_pwrite(file, desc, strlen(desc), 0);
out:
	for (unsigned i = 0; x && i < n; i++)
		free(x[i].file);
	free(x);
	free(desc);
	free(dir);
	free(base);
	return ret;
}

static const struct img_opt_desc vmdk_create_opts[] = {
	{ "size", IMG_OPT_SIZE, "Virtual disk size", NULL },
	{ "adapter_type", IMG_OPT_STR,
	  "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX",
	  NULL },
	{ "backing_file", IMG_OPT_STR, "File name of a base image", NULL },
	{ "backing_fmt", IMG_OPT_STR, "Must be 'vmdk' if present", NULL },
	{ "compat6", IMG_OPT_BOOL, "VMDK version 6 image", "off" },
	{ "hwversion", IMG_OPT_STR, "VMDK hardware version", "undefined" },
	{ "toolsversion", IMG_OPT_STR, "VMware guest tools version", NULL },
	{ "subformat", IMG_OPT_STR,
	  "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ",
	  NULL },
	{ "zeroed_grain", IMG_OPT_BOOL,
	  "Enable efficient zero writes using the zeroed-grain GTE feature",
	  NULL },
	{ "preallocation", IMG_OPT_STR,
	  "Preallocation mode (allowed values: off)", NULL },
	{ NULL, 0, NULL, NULL },
};

static const struct img_create_ops vmdk_create_ops = {
	.create = vmdk_create,
	.opts = vmdk_create_opts,
};

static const struct img_compress_ops vmdk_compress_ops = {
	.params = vmdk_compress_params,
	.write = vmdk_write_compressed,
};

const struct img_driver vmdk_driver = {
	.name = "vmdk",
	.priv_size = sizeof(struct vmdk),
	.probe = vmdk_probe,
	.open = vmdk_open,
	.close = vmdk_close,
	.zero = vmdk_zero,
	.flush = vmdk_flush,
	.map = vmdk_map,
	.commit = vmdk_sparse_commit,
	.create = &vmdk_create_ops,
	.info = vmdk_info,
	.check = vmdk_check,
	.compress = &vmdk_compress_ops,
};
