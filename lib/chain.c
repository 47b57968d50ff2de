/* SPDX-License-Identifier: MIT */
/*
 * Backing chains: a driver only records the backing name and format its image
 * names; the core resolves the name relative to the overlay's directory (as
 * QEMU does), opens each layer read-only with the overlay's I/O settings,
 * refuses chains deeper than IMG_MAX_CHAIN_DEPTH and chains that loop back to
 * a file already in them (-ELOOP), refuses any backing file at all for an
 * image opened IMG_OPEN_UNTRUSTED (-EPERM), and never probes the format of a backing
 * file whose format the header names (probing a guest-written file as another
 * format is a known hole). Reads that fall through to the backing see zeroes
 * past the backing's end, and zeroes when the chain is not opened.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

struct file_id {
	dev_t dev;
	ino_t ino;
	bool valid;
};

static struct file_id file_id_of(const char *path)
{
	struct file_id id = { 0 };
	struct stat st;

	if (path && stat(path, &st) == 0) {
		id.dev = st.st_dev;
		id.ino = st.st_ino;
		id.valid = true;
	}
	return id;
}

static unsigned backing_open_flags(unsigned flags)
{
	return IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING |
	       (flags & (IMG_OPEN_SHARED | IMG_OPEN_DIRECT | IMG_OPEN_UNSAFE |
			 IMG_OPEN_NO_REPAIR | IMG_OPEN_NO_IO));
}

static unsigned backing_io_flags(unsigned flags)
{
	unsigned io_flags = IMG_IO_RDONLY;

	if (flags & IMG_OPEN_DIRECT)
		io_flags |= IMG_IO_DIRECT;
	if (flags & IMG_OPEN_UNSAFE)
		io_flags |= IMG_IO_NOFLUSH;
	if (flags & IMG_OPEN_SHARED)
		io_flags |= IMG_IO_SHARED;
	return io_flags;
}

/* Open the backing of layer (at depth layer->depth) and attach it. */
static int open_one(struct img *layer, const struct file_id *ids)
{
	struct img_open_opts bo = {
		.format = layer->backing_fmt,
		.flags = backing_open_flags(layer->flags),
		.io = layer->io_kind,
		.cache_size = layer->cache_size,
	};
	const char *name = layer->backing_name;
	const char *path = layer->backing_path;
	struct file_id id;
	struct img_io *io;
	struct img *b;
	int ret;

	if (layer->depth + 1 > IMG_MAX_CHAIN_DEPTH)
		return img_error(-ELOOP, "backing chain deeper than %d",
				 IMG_MAX_CHAIN_DEPTH);
	id = file_id_of(path);
	for (unsigned i = 0; id.valid && i <= layer->depth; i++)
		if (ids[i].valid && ids[i].dev == id.dev &&
		    ids[i].ino == id.ino)
			return img_error(
				-ELOOP,
				"backing chain loops: '%s' is already in the chain",
				path);
	ret = img_io_open(path, backing_io_flags(layer->flags), layer->io_kind,
			  &io);
	if (ret < 0)
		return img_error(
			ret, "could not open backing file '%s': %s", name,
			ret == -ESPIPE ? img_last_error() : strerror(-ret));
	ret = img_open_layer(io, path, &bo, layer->depth + 1, &b);
	if (ret < 0)
		return img_error(ret, "could not open backing file '%s': %s",
				 name, img_last_error());
	/* The layer is opened without its own chain; what remains of its
	 * flags is what the chain asked for. */
	b->flags &= ~IMG_OPEN_NO_BACKING;
	layer->backing = b;
	return 0;
}

int img_chain_refuse_untrusted(const struct img *img, const char *name)
{
	if (img_untrusted(img) && name && *name)
		return img_untrusted_refuse(img, "names a backing file '%s'",
					    name);
	return 0;
}

int img_chain_open(struct img *img)
{
	struct file_id ids[IMG_MAX_CHAIN_DEPTH + 1];
	struct img *layer;
	int ret = 0;

	if (img->depth > IMG_MAX_CHAIN_DEPTH)
		return img_error(-ELOOP, "backing chain deeper than %d",
				 IMG_MAX_CHAIN_DEPTH);
	/* Layers above img (when reopening after set_backing on a lower
	 * layer) are not known here; img itself starts the list. */
	memset(ids, 0, sizeof(ids));
	ids[img->depth] = file_id_of(img->filename);
	for (layer = img; layer->backing_name; layer = layer->backing) {
		ret = open_one(layer, ids);
		if (ret < 0)
			break;
		ids[layer->backing->depth] =
			file_id_of(layer->backing->filename);
	}
	if (ret < 0) {
		img_close(img->backing);
		img->backing = NULL;
	}
	return ret;
}

int img_read_backing(struct img *img, void *buf, uint64_t off, uint64_t len)
{
	struct img *b = img->backing;
	uint64_t bsize, n = 0;
	int ret;

	if (b) {
		bsize = img_size(b);
		if (off < bsize) {
			n = img_min(len, bsize - off);
			ret = img_read(b, buf, off, n);
			if (ret < 0)
				return ret;
		}
	}
	if (n < len)
		memset((uint8_t *)buf + n, 0, len - n);
	return 0;
}
