/* SPDX-License-Identifier: MIT */
/*
 * The image object: opening (format probing or selection, driver state,
 * backing chain), creating (option validation, backing file checks, host file
 * creation), closing (final flush), information, and the accessors drivers use
 * on the image they serve. I/O requests go through lib/request.c and backing
 * chains through lib/chain.c.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define IMG_PROBE_LEN 512

static const struct img_driver *find_driver(const char *name)
{
	for (size_t i = 0; img_format_table[i]; i++)
		if (!strcmp(img_format_table[i]->name, name))
			return img_format_table[i];
	return NULL;
}

static const struct img_driver *get_driver(const char *name)
{
	const struct img_driver *drv = find_driver(name);

	if (!drv)
		img_error(-EINVAL, "unknown format '%s'", name);
	return drv;
}

static int probe(struct img_io *io, const char *filename,
		 const struct img_driver **out)
{
	uint8_t buf[IMG_PROBE_LEN];
	const struct img_driver *best = NULL;
	uint64_t size;
	size_t len;
	int best_score = 0, ret;

	ret = img_io_size(io, &size);
	if (ret < 0)
		return ret;
	len = (size_t)img_min(size, sizeof(buf));
	memset(buf, 0, sizeof(buf));
	if (len) {
		ret = img_io_pread(io, buf, len, 0);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; img_format_table[i]; i++) {
		const struct img_driver *drv = img_format_table[i];
		int score = backend_probe(drv, buf, len);

		if (score < 0)
			return score;
		if (score > best_score) {
			best_score = score;
			best = drv;
		}
	}
	if (!best)
		return img_error(-EINVAL,
				 "could not determine the format of '%s'",
				 filename ? filename : "(unnamed)");
	*out = best;
	return 0;
}

/* Free the object's own memory (the driver state is already closed). */
static void img_free(struct img *img)
{
	img_io_close(img->file);
	free(img->priv);
	free(img->filename);
	free(img->backing_name);
	free(img->backing_fmt);
	free(img->backing_path);
	img_zcache_free(img);
	pthread_mutex_destroy(&img->lock);
	pthread_mutex_destroy(&img->direct_lock);
	pthread_cond_destroy(&img->direct_idle);
	pthread_cond_destroy(&img->write_done);
	free(img);
}

/* img_open_layer with the driver drv, or when NULL the one opts->format
 * names, else the one probing finds. */
static int open_layer(struct img_io *io, const char *filename,
		      const struct img_open_opts *opts, unsigned depth,
		      const struct img_driver *drv, struct img **out)
{
	static const struct img_open_opts defaults;
	struct img *img;
	int ret;

	if (!opts)
		opts = &defaults;
	img = calloc(1, sizeof(*img));
	if (!img) {
		img_io_close(io);
		return img_error(-ENOMEM, "out of memory");
	}
	pthread_mutex_init(&img->lock, NULL);
	pthread_mutex_init(&img->direct_lock, NULL);
	pthread_cond_init(&img->direct_idle, NULL);
	pthread_cond_init(&img->write_done, NULL);
	img->file = io;
	img->flags = opts->flags;
	img->io_kind = opts->io;
	img->cache_size = opts->cache_size;
	img->depth = depth;
	ret = img_secret_resolve(opts->opts, opts->n_opts, opts->secret,
				 &img->secret);
	if (ret < 0)
		goto fail;
	if (filename) {
		img->filename = strdup(filename);
		if (!img->filename) {
			ret = img_error(-ENOMEM, "out of memory");
			goto fail;
		}
	}

	if (drv) {
	} else if (opts->format) {
		drv = get_driver(opts->format);
		if (!drv) {
			ret = -EINVAL;
			goto fail;
		}
	} else {
		ret = probe(io, filename, &drv);
		if (ret < 0)
			goto fail;
	}
	img->drv = drv;
	img->priv = calloc(1, drv->priv_size ? drv->priv_size : 1);
	if (!img->priv) {
		ret = img_error(-ENOMEM, "out of memory");
		goto fail;
	}
	ret = backend_open(img, opts->flags);
	if (ret < 0)
		goto fail;
	*out = img;
	return 0;
fail:
	img_free(img);
	return ret;
}

int img_open_layer(struct img_io *io, const char *filename,
		   const struct img_open_opts *opts, unsigned depth,
		   struct img **out)
{
	return open_layer(io, filename, opts, depth, NULL, out);
}

int img_open_driver(struct img_io *io, const struct img_driver *drv,
		    const struct img_open_opts *opts, struct img **out)
{
	return open_layer(io, NULL, opts, 0, drv, out);
}

int img_open_io(struct img_io *io, const char *filename,
		const struct img_open_opts *opts, struct img **out)
{
	struct img *img;
	int ret;

	ret = img_open_layer(io, filename, opts, 0, &img);
	if (ret < 0)
		return ret;
	if (opts && opts->snapshot) {
		ret = img_snapshot_load(img, opts->snapshot);
		if (ret < 0) {
			char msg[1024];

			snprintf(msg, sizeof(msg), "%s", img_last_error());
			img_close(img);
			return img_error(ret, "%s", msg);
		}
	}
	if (img->backing_name && !(img->flags & IMG_OPEN_NO_BACKING)) {
		ret = img_chain_open(img);
		if (ret < 0) {
			char msg[1024];

			/* Closing may flush and overwrite the reason. */
			snprintf(msg, sizeof(msg), "%s", img_last_error());
			img_close(img);
			img_error(ret, "%s", msg);
			return ret;
		}
	}
	*out = img;
	return 0;
}

static unsigned io_flags_for(unsigned open_flags)
{
	unsigned io_flags = 0;

	if (open_flags & IMG_OPEN_RDONLY)
		io_flags |= IMG_IO_RDONLY;
	if (open_flags & IMG_OPEN_DIRECT)
		io_flags |= IMG_IO_DIRECT;
	if (open_flags & IMG_OPEN_UNSAFE)
		io_flags |= IMG_IO_NOFLUSH;
	if (open_flags & IMG_OPEN_SHARED)
		io_flags |= IMG_IO_SHARED;
	return io_flags;
}

int img_open(const char *path, const struct img_open_opts *opts,
	     struct img **out)
{
	struct img_io *io;
	int ret;

	if (!path)
		return img_error(-EINVAL, "no file name given");
	ret = img_io_open(path, io_flags_for(opts ? opts->flags : 0),
			  opts ? opts->io : IMG_IO_AUTO, &io);
	/* The rbd backend's message (cluster, pool, timeout), a lock
	 * conflict's and a refused pipe's say more; so does a refused io_uring
	 * (ENOSYS alone would not say what is missing). */
	if (ret < 0 && ret != -EBUSY && ret != -ESPIPE &&
	    strncmp(path, "rbd:", 4))
		return img_error(ret, "could not open '%s': %s", path,
				 ret == -ENOSYS ? img_last_error() :
						  strerror(-ret));
	if (ret < 0)
		return ret;
	return img_open_io(io, path, opts, out);
}

int img_close(struct img *img)
{
	int ret = 0;

	if (!img)
		return 0;
	if (!img_read_only(img)) {
		pthread_mutex_lock(&img->lock);
		ret = backend_flush(img);
		pthread_mutex_unlock(&img->lock);
	}
	backend_close(img);
	img_close(img->backing);
	img_free(img);
	return ret;
}

/* ---- create ---- */

static bool opt_listed(const struct img_driver *drv, const char *key)
{
	const struct img_opt_desc *d = backend_create_opts(drv);

	for (; d && d->name; d++)
		if (!strcmp(d->name, key))
			return true;
	return false;
}

/*
 * Check every -o key against the driver's list and fold the generic ones
 * ("size", "backing_file", "backing_fmt", as qemu-img accepts them in -o too)
 * into *o.
 */
static int create_merge_opts(const struct img_driver *drv,
			     const struct img_create_opts *opts,
			     struct img_create_opts *o)
{
	int ret;

	*o = *opts;
	for (size_t i = 0; i < opts->n_opts; i++) {
		const char *key = opts->opts[i].key;

		if (!key || !opt_listed(drv, key))
			return img_error(-EINVAL, "%s: invalid parameter '%s'",
					 drv->name, key ? key : "");
	}
	if (!o->size) {
		ret = img_opt_size(opts, "size", &o->size);
		if (ret < 0)
			return ret;
	}
	if (!o->backing_file)
		img_opt_str(opts, "backing_file", &o->backing_file);
	if (!o->backing_fmt)
		img_opt_str(opts, "backing_fmt", &o->backing_fmt);
	if (o->backing_file && !o->backing_file[0])
		o->backing_file = NULL;
	if (o->backing_fmt && !o->backing_fmt[0])
		o->backing_fmt = NULL;
	if (o->size > UINT64_MAX - 511)
		return img_error(-EINVAL, "%s: size %" PRIu64 " is too large",
				 drv->name, o->size);
	/* qemu-img creates and measures whole 512-byte sectors. */
	o->size = img_align_up(o->size, 512);
	if (o->backing_file && !opt_listed(drv, "backing_file"))
		return img_error(
			-EINVAL,
			"%s: backing file not supported for file format '%s'",
			drv->name, drv->name);
	return 0;
}

/* Open the backing file the new image will name, as its chain would. */
static int create_check_backing(const char *filename, struct img_create_opts *o)
{
	struct img_open_opts bo = {
		.format = o->backing_fmt,
		.flags = IMG_OPEN_RDONLY | IMG_OPEN_SHARED,
	};
	struct img *b;
	char *path;
	int ret;

	if (o->backing_fmt && !find_driver(o->backing_fmt))
		return img_error(-EINVAL, "unknown format '%s'",
				 o->backing_fmt);
	ret = img_path_relative(filename, o->backing_file, &path);
	if (ret < 0)
		return ret;
	ret = img_open(path, &bo, &b);
	if (ret < 0) {
		ret = img_error(ret, "could not open backing file '%s': %s",
				o->backing_file, img_last_error());
		free(path);
		return ret;
	}
	free(path);
	if (!o->size)
		o->size = img_align_up(img_size(b), 512);
	/* Record what was probed, so that the new image never has its
	 * backing probed again (QEMU did this, with a warning, before it
	 * made -F mandatory). Driver names are static strings. */
	if (!o->backing_fmt)
		o->backing_fmt = img_format(b);
	img_close(b);
	return 0;
}

/* The driver and the merged options for creating filename, after checking
 * them and the backing file (unless unsafe). */
static int create_prepare(const char *filename,
			  const struct img_create_opts *opts,
			  const struct img_driver **drv,
			  struct img_create_opts *o)
{
	int ret;

	if (!opts || !opts->format)
		return img_error(-EINVAL, "create: no format given");
	*drv = get_driver(opts->format);
	if (!*drv)
		return -EINVAL;
	if (!(*drv)->create)
		return img_error(-ENOTSUP,
				 "%s: format does not support image creation",
				 (*drv)->name);
	ret = create_merge_opts(*drv, opts, o);
	if (ret < 0)
		return ret;
	if (o->backing_file && !o->unsafe_backing)
		return create_check_backing(filename, o);
	return 0;
}

int img_create_io(struct img_io *io, const char *filename,
		  const struct img_create_opts *opts)
{
	const struct img_driver *drv;
	struct img_create_opts o;
	int ret = create_prepare(filename, opts, &drv, &o);

	if (ret < 0)
		return ret;
	return backend_create(drv, filename, io, &o);
}

int img_create(const char *path, const struct img_create_opts *opts)
{
	const struct img_driver *drv;
	struct img_create_opts o;
	struct img_io *io;
	int ret;

	if (!path)
		return img_error(-EINVAL, "no file name given");
	/* Refuse bad options and missing backing files before the host file
	 * is created (and an existing one truncated). */
	ret = create_prepare(path, opts, &drv, &o);
	if (ret < 0)
		return ret;
	/* The backing is checked; it needs no second opening below. */
	o.unsafe_backing = true;
	ret = img_io_open(path, IMG_IO_CREATE, IMG_IO_AUTO, &io);
	if (ret < 0 && ret != -EBUSY && ret != -ESPIPE &&
	    strncmp(path, "rbd:", 4))
		return img_error(ret, "could not create '%s': %s", path,
				 strerror(-ret));
	if (ret < 0)
		return ret;
	ret = backend_create(drv, path, io, &o);
	if (ret >= 0)
		ret = img_io_flush(io);
	img_io_close(io);
	return ret;
}

static int opt_desc_cmp(const void *a, const void *b)
{
	const struct img_opt_desc *const *x = a, *const *y = b;

	return strcmp((*x)->name, (*y)->name);
}

/* One line per option of descs, sorted by name, in qemu-img's -o help
 * layout. */
static int opts_help(const struct img_opt_desc *descs, char *buf,
		     size_t buf_size)
{
	static const char *const types[] = {
		[IMG_OPT_STR] = "str",
		[IMG_OPT_SIZE] = "size",
		[IMG_OPT_NUM] = "num",
		[IMG_OPT_BOOL] = "bool (on/off)",
	};
	const struct img_opt_desc *sorted[128];
	size_t used = 0, n = 0;
	int len;

	if (!buf || !buf_size)
		return img_error(-EINVAL, "option help: no buffer");
	buf[0] = '\0';
	for (const struct img_opt_desc *d = descs;
	     d && d->name && n < IMG_ARRAY_SIZE(sorted); d++)
		sorted[n++] = d;
	qsort(sorted, n, sizeof(sorted[0]), opt_desc_cmp);
	for (size_t i = 0; i < n; i++) {
		const struct img_opt_desc *d = sorted[i];
		char lhs[128];

		snprintf(lhs, sizeof(lhs), "%s=<%s>", d->name,
			 (size_t)d->type < IMG_ARRAY_SIZE(types) ?
				 types[d->type] :
				 "str");
		len = snprintf(buf + used, buf_size - used, "  %-22s - %s\n",
			       lhs, d->help ? d->help : "");
		if (len < 0 || (size_t)len >= buf_size - used)
			return img_error(
				-ENOSPC,
				"option help: buffer of %zu bytes is too small",
				buf_size);
		used += (size_t)len;
	}
	return 0;
}

int img_create_help(const char *format, char *buf, size_t buf_size)
{
	const struct img_driver *drv = get_driver(format);

	return drv ? opts_help(backend_create_opts(drv), buf, buf_size) :
		     -EINVAL;
}

int img_create_options(const char *format, const struct img_opt_desc **out)
{
	static const struct img_opt_desc none[] = { { NULL, 0, NULL, NULL } };
	const struct img_driver *drv = get_driver(format);

	if (!drv)
		return -EINVAL;
	*out = backend_create_opts(drv) ? backend_create_opts(drv) : none;
	return 0;
}

int img_amend_help(const char *format, char *buf, size_t buf_size)
{
	const struct img_driver *drv = get_driver(format);

	if (!drv)
		return -EINVAL;
	if (!drv->amend || !drv->amend->amend)
		return img_error(
			-ENOTSUP,
			"Format driver '%s' does not support option amendment",
			drv->name);
	return opts_help(backend_amend_opts(drv), buf, buf_size);
}

static const char *format_names[32];
static pthread_once_t format_names_once = PTHREAD_ONCE_INIT;

static void format_names_init(void)
{
	size_t n = 0;

	for (size_t i = 0;
	     img_format_table[i] && n < IMG_ARRAY_SIZE(format_names) - 1; i++)
		format_names[n++] = img_format_table[i]->name;
	format_names[n] = NULL;
}

const char *const *img_formats(void)
{
	pthread_once(&format_names_once, format_names_init);
	return format_names;
}

/* ---- information ---- */

int img_info(struct img *img, struct img_info *info)
{
	uint64_t actual = 0;
	int ret = 0;

	memset(info, 0, sizeof(*info));
	info->format = img->drv->name;
	info->filename = img->filename ? img->filename : "";
	info->virtual_size = img->size;
	/* Backends that cannot tell (mem) leave it at 0. */
	if (img_io_allocated(img->file, &actual) >= 0)
		info->actual_size = actual;
	info->backing_file = img->backing_name;
	info->backing_fmt = img->backing_fmt;
	info->full_backing_file = img->backing_path;
	info->serialised = !img->drv->thread_safe;
	if (img->drv->info) {
		pthread_mutex_lock(&img->lock);
		ret = backend_info(img, info);
		pthread_mutex_unlock(&img->lock);
	}
	return ret < 0 ? ret : 0;
}

uint64_t img_size(const struct img *img)
{
	return img->size;
}

const char *img_format(const struct img *img)
{
	return img->drv->name;
}

const char *img_filename(const struct img *img)
{
	return img->filename ? img->filename : "";
}

bool img_read_only(const struct img *img)
{
	return img->flags & IMG_OPEN_RDONLY;
}

struct img *img_backing(const struct img *img)
{
	return img->backing;
}

uint64_t img_granularity(const struct img *img)
{
	struct img_info *info;
	uint64_t g = 64 * 1024;

	if (!img->drv->info)
		return g;
	info = calloc(1, sizeof(*info));
	if (!info)
		return g;
	if (img_info((struct img *)img, info) == 0 && info->cluster_size)
		g = info->cluster_size;
	free(info);
	return g;
}

int img_check(struct img *img, unsigned flags, struct img_check *res)
{
	void (*report)(void *opaque, const char *line) = res->report;
	void *opaque = res->opaque;
	int ret;

	memset(res, 0, sizeof(*res));
	res->report = report;
	res->opaque = opaque;
	if (!img->drv->check)
		return img_error(
			-ENOTSUP,
			"%s: this image format does not support checks",
			img->drv->name);
	if ((flags & (IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS)) &&
	    img_read_only(img))
		return img_error(-EROFS,
				 "%s: cannot repair '%s': opened read-only",
				 img->drv->name, img_filename(img));
	img_lock_whole(img);
	ret = backend_check(img, flags, res);
	pthread_mutex_unlock(&img->lock);
	return ret < 0 ? ret : 0;
}

int img_measure(const struct img_create_opts *opts, struct img *src,
		struct img_measure *out)
{
	const struct img_driver *drv;
	struct img_create_opts o;
	int ret;

	if (!opts || !opts->format)
		return img_error(-EINVAL, "measure: no output format given");
	drv = get_driver(opts->format);
	if (!drv)
		return -EINVAL;
	if (!drv->create || !drv->create->measure)
		return img_error(-ENOTSUP,
				 "%s: format does not support measure",
				 drv->name);
	ret = create_merge_opts(drv, opts, &o);
	if (ret < 0)
		return ret;
	memset(out, 0, sizeof(*out));
	return backend_measure(drv, &o, src, out);
}

int img_set_backing(struct img *img, const char *backing, const char *fmt)
{
	char *old_name, *old_fmt, *old_path;
	struct img *old_backing;
	int ret;

	if (!img->drv->amend || !img->drv->amend->set_backing)
		return img_error(-ENOTSUP,
				 "%s: format does not support backing files",
				 img->drv->name);
	if (img_read_only(img))
		return img_error(-EROFS, "%s: '%s' is opened read-only",
				 img->drv->name, img_filename(img));
	if (backing && !*backing)
		backing = NULL;
	if (fmt && !*fmt)
		fmt = NULL;
	if (fmt && !find_driver(fmt))
		return img_error(-EINVAL, "unknown format '%s'", fmt);
	/* Open the new chain before the header names it, keeping the old one
	 * until the header is written: any failure leaves the image and its
	 * open chain as they were. */
	old_backing = img->backing;
	old_name = img->backing_name;
	old_fmt = img->backing_fmt;
	old_path = img->backing_path;
	img->backing = NULL;
	img->backing_name = img->backing_fmt = img->backing_path = NULL;
	ret = img_set_backing_name(img, backing, backing ? fmt : NULL);
	if (ret >= 0 && backing && !(img->flags & IMG_OPEN_NO_BACKING))
		ret = img_chain_open(img);
	if (ret >= 0) {
		img_lock_whole(img);
		ret = backend_set_backing(img, backing, backing ? fmt : NULL);
		pthread_mutex_unlock(&img->lock);
	}
	if (ret < 0) {
		char msg[1024];

		/* Closing the new chain must not overwrite the reason. */
		snprintf(msg, sizeof(msg), "%s", img_last_error());
		img_close(img->backing);
		free(img->backing_name);
		free(img->backing_fmt);
		free(img->backing_path);
		img->backing = old_backing;
		img->backing_name = old_name;
		img->backing_fmt = old_fmt;
		img->backing_path = old_path;
		return img_error(ret, "%s", msg);
	}
	img_close(old_backing);
	free(old_name);
	free(old_fmt);
	free(old_path);
	return 0;
}

/* ---- what drivers ask of the core ---- */

void *img_priv(struct img *img)
{
	return img->priv;
}

struct img_io *img_file(struct img *img)
{
	return img->file;
}

void img_set_size(struct img *img, uint64_t size)
{
	img->size = size;
}

void img_set_zero_align(struct img *img, uint64_t align)
{
	img->zero_align = align;
}

void img_set_file_is_disk(struct img *img)
{
	img->file_is_disk = true;
}

unsigned img_open_flags(const struct img *img)
{
	return img->flags;
}

uint64_t img_cache_size_hint(const struct img *img)
{
	return img->cache_size;
}

int img_set_backing_name(struct img *img, const char *name, const char *fmt)
{
	char *n = NULL, *f = NULL, *path = NULL;
	int ret;

	ret = img_chain_refuse_untrusted(img, name);
	if (ret < 0)
		return ret;
	if (name && *name) {
		n = strdup(name);
		if (!n)
			return img_error(-ENOMEM, "out of memory");
		ret = img_path_relative(img->filename, name, &path);
		if (ret < 0) {
			free(n);
			return ret;
		}
		if (fmt && *fmt) {
			f = strdup(fmt);
			if (!f) {
				free(n);
				free(path);
				return img_error(-ENOMEM, "out of memory");
			}
		}
	}
	free(img->backing_name);
	free(img->backing_fmt);
	free(img->backing_path);
	img->backing_name = n;
	img->backing_fmt = f;
	img->backing_path = path;
	return 0;
}

bool img_has_backing(const struct img *img)
{
	return img->backing_name != NULL;
}

int img_io_open_relative(struct img *img, const char *name, unsigned io_flags,
			 struct img_io **out)
{
	char *path;
	int ret;

	ret = img_path_relative(img->filename, name, &path);
	if (ret < 0)
		return ret;
	if (img_read_only(img))
		io_flags |= IMG_IO_RDONLY;
	io_flags |= io_flags_for(img->flags) & ~IMG_IO_RDONLY;
	if (io_flags & IMG_IO_BENEATH)
		ret = img_open_confined(img, name, io_flags & ~IMG_IO_BENEATH,
					out);
	else
		ret = img_io_open(path, io_flags, img->io_kind, out);
	if (ret == -EXDEV) {
		free(path);
		return ret;
	}
	if (ret < 0 && ret != -EBUSY)
		img_error(ret, "could not open '%s': %s", path, strerror(-ret));
	free(path);
	return ret;
}
