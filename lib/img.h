/* SPDX-License-Identifier: MIT */
/*
 * libimg public API: open, create and operate on VM disk images (qcow2, raw,
 * and more) without knowing their format. This is the only header that
 * tools/ and fuse/ include.
 *
 * Conventions: every fallible function returns an int, >= 0 on success and
 * -errno on failure; objects come back through out-parameters that are set
 * only on success. The reason for the last failure on the calling thread is
 * in img_last_error(). Offsets and lengths are guest bytes as uint64_t.
 *
 * Errors used (see img_error()):
 *   -EINVAL       bad argument (unknown option, bad size, misaligned request)
 *   -IMG_ECORRUPT corrupt image (a field or table that breaks the format)
 *   -ENOTSUP      unsupported feature bit or operation
 *   -EROFS        write to an image opened read-only
 *   -ENOSPC, -EIO host I/O errors, passed through
 *   -ELOOP        backing chain too deep or looping
 *   -ENOENT       missing file or backing file
 *   -EACCES       wrong passphrase
 *
 * Thread safety: an image may be used from several threads at once; the
 * library serialises what the format driver cannot do concurrently.
 */
#ifndef IMG_H
#define IMG_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IMG_ECORRUPT EUCLEAN

struct img;

/* ---- errors ---- */

/*
 * Record a printf-style message as the calling thread's last error and return
 * err unchanged, so that `return img_error(-EINVAL, "...")` works.
 */
int img_error(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The calling thread's last error message; "" if none. Never NULL. */
const char *img_last_error(void);
/* Forget the calling thread's last error. */
void img_clear_error(void);

/* ---- options given as key=value strings (qemu-img's -o) ---- */

struct img_kv {
	const char *key;
	const char *value;
};

/*
 * Parse "k1=v1,k2=v2" (qemu-img's -o syntax; ",," escapes a comma) and
 * append to *kv / *n (realloc'd). Strings are copied. Free with img_kv_free.
 */
int img_kv_parse(const char *s, struct img_kv **kv, size_t *n);
void img_kv_free(struct img_kv *kv, size_t n);
/* Parse a size with optional k/K, M, G, T, P, E suffix (powers of 1024). */
int img_parse_size(const char *s, uint64_t *out);

/* ---- open, create, close ---- */

enum img_io_kind {
	IMG_IO_AUTO = 0, /* io_uring when it can be set up, else psync */
	IMG_IO_URING,
	IMG_IO_PSYNC,
};

/* img_open_opts.flags */
#define IMG_OPEN_RDONLY (1u << 0)
#define IMG_OPEN_NO_BACKING (1u << 1) /* do not open the backing chain */
#define IMG_OPEN_SHARED (1u << 2) /* -U: no image locking */
#define IMG_OPEN_DIRECT (1u << 3) /* O_DIRECT on every file (-t none) */
#define IMG_OPEN_UNSAFE (1u << 4) /* flush is a no-op (-t unsafe) */
#define IMG_OPEN_NO_REPAIR (1u << 5) /* no automatic repair on open */

struct img_open_opts {
	const char *
		format; /* NULL: probe (refused for backing files named in a header) */
	unsigned flags; /* IMG_OPEN_* */
	enum img_io_kind io;
	uint64_t cache_size; /* metadata cache in bytes, 0 = default */
	const struct img_kv
		*opts; /* format options (--image-opts), may be NULL */
	size_t n_opts;
};

/*
 * Open the image at path with its backing chain (read-only) unless
 * IMG_OPEN_NO_BACKING. opts may be NULL for defaults.
 */
int img_open(const char *path, const struct img_open_opts *opts,
	     struct img **out);

/*
 * Flush and close. Returns the first error from the final flush; the image
 * is released either way. NULL is a no-op.
 */
int img_close(struct img *img);

/* img_create_opts.preallocation */
enum img_prealloc {
	IMG_PREALLOC_OFF = 0,
	IMG_PREALLOC_METADATA,
	IMG_PREALLOC_FALLOC,
	IMG_PREALLOC_FULL,
};

struct img_create_opts {
	const char *format; /* required */
	uint64_t size; /* virtual size; 0 with a backing file = its size */
	const char *backing_file; /* NULL: none */
	const char *backing_fmt; /* NULL: probe the backing file */
	bool unsafe_backing; /* -u: do not open the backing file */
	const struct img_kv *opts; /* -o options; unknown keys are refused */
	size_t n_opts;
};

/* Create a new image at path (truncating any existing file). */
int img_create(const char *path, const struct img_create_opts *opts);

/* Describe the -o options a format's create accepts, one per line, to buf. */
int img_create_help(const char *format, char *buf, size_t buf_size);

/* Names of the formats this build supports, NULL-terminated. */
const char *const *img_formats(void);

/* ---- I/O ---- */

/* img_write/img_zero flags */
#define IMG_FUA (1u << 0) /* data reaches stable storage before return */
#define IMG_ZERO_MAY_UNMAP (1u << 1) /* zero may deallocate */
#define IMG_ZERO_FAST (1u << 2) /* fail with -ENOTSUP unless zeroing is cheap */

/*
 * Read len bytes at guest offset off. Unallocated ranges read from the
 * backing chain, or as zeroes. Requests past the virtual size fail -EINVAL.
 */
int img_read(struct img *img, void *buf, uint64_t off, uint64_t len);
int img_write(struct img *img, const void *buf, uint64_t off, uint64_t len,
	      unsigned flags);
int img_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags);
/* Discard: contents afterwards are unspecified (backing data or zero). */
int img_discard(struct img *img, uint64_t off, uint64_t len);
int img_flush(struct img *img);

/* ---- allocation status ---- */

/* struct img_extent.flags */
#define IMG_EXT_DATA (1u << 0) /* reads may return non-zero data */
#define IMG_EXT_ZERO (1u << 1) /* reads return zeroes */
#define IMG_EXT_ALLOCATED (1u << 2) /* allocated in the layer at depth */
#define IMG_EXT_OFFSET_VALID (1u << 3) /* file_off holds the host offset */
#define IMG_EXT_COMPRESSED (1u << 4)
#define IMG_EXT_ENCRYPTED (1u << 5)

struct img_extent {
	uint64_t off; /* guest offset */
	uint64_t len;
	unsigned flags; /* IMG_EXT_* */
	unsigned depth; /* chain layer that holds it; chain length if none */
	uint64_t file_off; /* host offset when IMG_EXT_OFFSET_VALID */
	const char *file; /* host file name when IMG_EXT_OFFSET_VALID */
};

/*
 * Describe the range starting at off, following the backing chain: fills
 * *ext with an extent of 1..len bytes starting at off whose status is uniform.
 * With IMG_BS_NO_CHAIN only this image's own layer is considered (unallocated
 * ranges then report depth 0 without IMG_EXT_ALLOCATED).
 */
#define IMG_BS_NO_CHAIN (1u << 0)
int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     unsigned flags, struct img_extent *ext);

/* ---- information ---- */

enum img_value_type {
	IMG_VAL_STR,
	IMG_VAL_U64,
	IMG_VAL_BOOL,
};

/* One format-specific field, named as qemu-img's JSON names it. */
struct img_field {
	const char *key; /* e.g. "lazy-refcounts" */
	enum img_value_type type;
	const char *str;
	uint64_t u64;
	bool b;
};

#define IMG_INFO_MAX_FIELDS 24

struct img_info {
	const char *format; /* "qcow2" */
	const char *filename;
	uint64_t virtual_size;
	uint64_t actual_size; /* bytes the host file(s) allocate */
	uint64_t cluster_size; /* 0 when the format has none */
	const char *backing_file; /* as written in the image, or NULL */
	const char *backing_fmt; /* as written in the image, or NULL */
	const char *full_backing_file; /* resolved path, or NULL */
	bool dirty;
	bool encrypted;
	size_t n_fields;
	struct img_field fields[IMG_INFO_MAX_FIELDS]; /* "format-specific" */
};

/* Fill *info; strings point into the open image and live as long as it. */
int img_info(struct img *img, struct img_info *info);

uint64_t img_size(const struct img *img);
const char *img_format(const struct img *img);
const char *img_filename(const struct img *img);
bool img_read_only(const struct img *img);
/* The backing image (owned by img), or NULL. */
struct img *img_backing(const struct img *img);
/* Preferred I/O granularity: cluster size, or 64 KiB when the format has none. */
uint64_t img_granularity(const struct img *img);

/* ---- check and repair ---- */

#define IMG_CHECK_FIX_LEAKS (1u << 0)
#define IMG_CHECK_FIX_ERRORS (1u << 1)

struct img_check {
	uint64_t corruptions;
	uint64_t leaks;
	uint64_t check_errors;
	uint64_t corruptions_fixed;
	uint64_t leaks_fixed;
	uint64_t image_end_offset;
	uint64_t total_clusters;
	uint64_t allocated_clusters;
	uint64_t fragmented_clusters;
	uint64_t compressed_clusters;
	bool has_stats; /* the cluster counts above are meaningful */
	/* One line per problem found, via this callback (may be NULL). */
	void (*report)(void *opaque, const char *line);
	void *opaque;
};

/*
 * Check the image's metadata (the image must be opened read-write to repair).
 * Returns -ENOTSUP if the format cannot be checked; 0 otherwise, with the
 * counts in *res (res->report/opaque are inputs).
 */
int img_check(struct img *img, unsigned flags, struct img_check *res);

/* ---- resize ---- */

#define IMG_RESIZE_SHRINK (1u << 0)
int img_resize(struct img *img, uint64_t size, unsigned flags,
	       enum img_prealloc prealloc);

/*
 * Point the image at a new backing file without copying data (rebase -u):
 * backing may be NULL for none. Reopens the chain.
 */
int img_set_backing(struct img *img, const char *backing, const char *fmt);

/* ---- measure ---- */

struct img_measure {
	uint64_t required;
	uint64_t fully_allocated;
};

/*
 * Space a new image of format/opts would need to hold src's contents (src may
 * be NULL: an empty image of opts->size).
 */
int img_measure(const struct img_create_opts *opts, struct img *src,
		struct img_measure *out);

/* ---- asynchronous requests ---- */

enum img_aio_op {
	IMG_AIO_READ,
	IMG_AIO_WRITE,
	IMG_AIO_ZERO,
	IMG_AIO_DISCARD,
	IMG_AIO_FLUSH,
};

struct img_aio;

struct img_aio_req {
	enum img_aio_op op;
	void *buf; /* READ: destination; WRITE: source */
	uint64_t off;
	uint64_t len;
	unsigned flags; /* IMG_FUA, IMG_ZERO_* */
	/* Called once from a worker thread with the result (0 or -errno). */
	void (*done)(struct img_aio_req *req, int ret);
	void *opaque;
	/* Error message when ret < 0 (valid during done()). */
	const char *error;
};

/*
 * A pool of nthreads workers (0 = one per CPU) running requests against
 * images. Requests run concurrently and complete in any order.
 */
int img_aio_new(unsigned nthreads, struct img_aio **out);
/* Queue req on img; req must stay valid until done() is called. */
int img_aio_submit(struct img_aio *aio, struct img *img,
		   struct img_aio_req *req);
/* Wait until every submitted request has completed. */
void img_aio_drain(struct img_aio *aio);
/* Drain and free the pool. NULL is a no-op. */
void img_aio_free(struct img_aio *aio);

#ifdef __cplusplus
}
#endif

#endif
