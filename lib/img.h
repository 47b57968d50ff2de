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
 *   -ENOSPC, -EIO host I/O errors, passed through; -EIO also for guest data
 *                 the image maps past the end of its file (lost data)
 *   -ESPIPE       a file whose size cannot be known (pipe, socket, char
 *                 device) named as an image
 *   -ELOOP        backing chain too deep or looping
 *   -ENOENT       missing file or backing file
 *   -EACCES       wrong passphrase
 *   -EPERM        an image opened IMG_OPEN_UNTRUSTED asks for what it may not
 *   -EXDEV        a reference resolves outside the directory it must stay in
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
/* No automatic repair on open; and open what check must report though
 * open would refuse it (a truncated VHD, VDI or VHDX). */
#define IMG_OPEN_NO_REPAIR (1u << 5)
/* Open without reading data (info): an encrypted image opens without its
 * passphrase; reads and writes then fail -EACCES. */
#define IMG_OPEN_NO_IO (1u << 8)
/* VMDK: extent files may be outside the image's directory (absolute names
 * or ".." components in its descriptor), which untrusted images must not. */
#define IMG_OPEN_ANY_EXTENT_PATH (1u << 9)
/* Discards give space back to the host (QEMU's discard=unmap): qcow2 punches
 * the clusters whose last reference a discard, zeroing or snapshot deletion
 * dropped. Without it, freed clusters are only reused. */
#define IMG_OPEN_UNMAP (1u << 10)
/*
 * The image comes from someone else (an upload, another tenant): refuse
 * (-EPERM, "untrusted: '<file>' names ...") any reference to another file
 * (backing file or parent, qcow2 data_file, VMDK extents outside the
 * descriptor's own file), cap every metadata table the image sizes at
 * IMG_UNTRUSTED_METADATA_CAP bytes and the LUKS key derivation at
 * IMG_UNTRUSTED_KDF_MAX_ITER iterations per slot. A self-contained image
 * opens and reads as without the flag.
 */
#define IMG_OPEN_UNTRUSTED (1u << 11)
#define IMG_UNTRUSTED_METADATA_CAP (8ull << 20)
#define IMG_UNTRUSTED_KDF_MAX_ITER (1ull << 22)

struct img_open_opts {
	const char *
		format; /* NULL: probe (refused for backing files named in a header) */
	unsigned flags; /* IMG_OPEN_* */
	enum img_io_kind io;
	uint64_t cache_size; /* metadata cache in bytes, 0 = default */
	const struct img_kv
		*opts; /* format options (--image-opts), may be NULL */
	size_t n_opts;
	/* Internal snapshot (name or id) to open instead of the active
	 * state: a read-only view whose size is the snapshot's disk size.
	 * Requires IMG_OPEN_RDONLY. NULL: the active state. */
	const char *snapshot;
	/* Passphrase of an encrypted image. NULL: the secret registered under
	 * the id that opts names (encrypt.key-secret=ID), else the default
	 * secret (img_secret_register with a NULL id), else none. */
	const struct img_secret *secret;
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
	/* Passphrase for encrypt.format=luks; NULL: resolved as for open. */
	const struct img_secret *secret;
};

/* Create a new image at path (truncating any existing file). */
int img_create(const char *path, const struct img_create_opts *opts);

/* Describe the -o options a format's create accepts, one per line, to buf. */
int img_create_help(const char *format, char *buf, size_t buf_size);

enum img_opt_type {
	IMG_OPT_STR,
	IMG_OPT_SIZE,
	IMG_OPT_NUM,
	IMG_OPT_BOOL,
};

struct img_opt_desc {
	const char *name; /* "cluster_size" */
	enum img_opt_type type;
	const char *help;
	/* The default as qemu-img create's "Formatting" line shows it when
	 * the option is not given; NULL: not shown then. */
	const char *def;
};

/*
 * The -o options a format's create accepts: *out, a static table ending
 * with a NULL name, in qemu-img's order (the order of its "Formatting"
 * line). -EINVAL for an unknown format.
 */
int img_create_options(const char *format, const struct img_opt_desc **out);

/* Names of the formats this build supports, NULL-terminated. */
const char *const *img_formats(void);

/* ---- secrets (passphrases of encrypted images; lib/secret.c) ---- */

/*
 * A secret's bytes are kept in locked memory (mlock where allowed), out of
 * core dumps, and wiped when freed. They are never read from argv or the
 * environment: only from a file, a file descriptor or a terminal.
 */
struct img_secret;

/*
 * While any holder exists (a secret, a loaded key, or a caller that keeps
 * key material of its own, such as a TLS private key), core dumps of the
 * process carry no anonymous memory (lib/secret.c says how and what it
 * costs). Acquire fails (-errno) only if nothing can keep cores out; each
 * successful acquire needs one release.
 */
int img_core_guard_acquire(void);
void img_core_guard_release(void);

/* A secret holding a copy of len bytes of data. */
int img_secret_new(const void *data, size_t len, struct img_secret **out);
/* The whole file (format=raw) or its base64 decoding. */
int img_secret_from_file(const char *path, bool base64,
			 struct img_secret **out);
/* Everything readable from fd until end of file (fd stays open). */
int img_secret_from_fd(int fd, struct img_secret **out);
/* Ask on /dev/tty with echo off ("<prompt>: "); the newline is dropped. */
int img_secret_prompt(const char *prompt, struct img_secret **out);
void img_secret_free(struct img_secret *s);
const uint8_t *img_secret_data(const struct img_secret *s, size_t *len);

/*
 * The process-wide registry that encrypt.key-secret=ID resolves against.
 * register takes ownership of s (on success); id NULL registers the
 * default secret, used by encrypted images that name no secret (also
 * backing files). -EEXIST if id is taken.
 */
int img_secret_register(const char *id, struct img_secret *s);
const struct img_secret *img_secret_lookup(const char *id);
/* qemu's --object secret,id=ID,file=PATH[,format=raw|base64]: load and
 * register. data= is refused (it would put the secret in argv). */
int img_secret_object(const char *spec);
/* Free (and wipe) every registered secret. */
void img_secret_clear(void);
/*
 * The cap on the key derivation cost an encrypted image may demand: PBKDF2
 * iterations per LUKS key slot (all slots tried: four times it). Untrusted
 * images above it fail -E2BIG. Process-wide; 0 restores the default (2^25).
 */
void img_luks_set_max_iter(uint64_t max_iter);

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
	/* Where the format would keep saved VM state (qemu-io's "vm state
	 * offset"); 0 when it has no such place. */
	uint64_t vm_state_offset;
	const char *backing_file; /* as written in the image, or NULL */
	const char *backing_fmt; /* as written in the image, or NULL */
	const char *full_backing_file; /* resolved path, or NULL */
	bool dirty;
	bool encrypted;
	/* The driver takes one request at a time (under the image's lock):
	 * more threads issuing requests do not make it faster. */
	bool serialised;
	size_t n_fields;
	struct img_field fields[IMG_INFO_MAX_FIELDS]; /* "format-specific" */
};

/* Fill *info; strings point into the open image and live as long as it. */
int img_info(struct img *img, struct img_info *info);

/* One LUKS key slot (qemu-img info shows iters and stripes of active ones). */
struct img_crypt_slot {
	bool active;
	uint32_t iters;
	uint32_t stripes;
	uint64_t key_offset; /* bytes from the start of the LUKS header */
};

#define IMG_CRYPT_MAX_SLOTS 8

/* An encrypted image's parameters: qemu-img info's "encrypt" object. */
struct img_crypt_info {
	const char *format; /* "luks", or "aes" (qcow2 legacy: nothing else) */
	const char *cipher_alg; /* "aes-256" */
	const char *cipher_mode; /* "xts" */
	const char *ivgen_alg; /* "plain64" */
	const char *ivgen_hash_alg; /* NULL unless essiv */
	const char *hash_alg; /* "sha256" */
	const char *uuid;
	uint64_t payload_offset; /* bytes */
	uint32_t master_key_iters;
	unsigned n_slots;
	struct img_crypt_slot slots[IMG_CRYPT_MAX_SLOTS];
};

/*
 * Describe the encryption of img (works on images opened with
 * IMG_OPEN_NO_IO, without the passphrase). -ENOTSUP (no message) when img is
 * not encrypted or its format does not say. Strings live as long as img.
 */
int img_crypt_info(struct img *img, struct img_crypt_info *out);

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

/* ---- internal snapshots (qcow2) ---- */

struct img_snapshot_info {
	char *id; /* unique id string ("1", "2", ...) */
	char *name; /* tag, may be "" */
	uint64_t vm_state_size; /* bytes of saved VM state, 0 if none */
	uint64_t disk_size; /* virtual disk size when the snapshot was taken */
	uint64_t date_sec; /* wall clock time of creation */
	uint32_t date_nsec;
	uint64_t vm_clock_nsec; /* guest clock at creation */
	uint64_t icount; /* instruction count, UINT64_MAX if absent */
};

/*
 * List the image's internal snapshots in table order: *out (malloc'd, free
 * with img_snapshot_list_free) and *n. Formats without snapshots: -ENOTSUP.
 */
int img_snapshot_list(struct img *img, struct img_snapshot_info **out,
		      size_t *n);
void img_snapshot_list_free(struct img_snapshot_info *list, size_t n);
/*
 * Create a snapshot of the current disk state named name (no VM state).
 * Fails -EEXIST if a snapshot has that name or id. Read-write images only.
 */
int img_snapshot_create(struct img *img, const char *name);
/*
 * Revert the disk to a snapshot (found by id first, then by name; -ENOENT
 * if none): the image's size becomes the snapshot's disk size.
 */
int img_snapshot_apply(struct img *img, const char *name_or_id);
/* Delete a snapshot (id first, then name; -ENOENT if none). */
int img_snapshot_delete(struct img *img, const char *name_or_id);

/* ---- snapshots, clones and changes the storage keeps (Ceph RBD) ---- */

/* img_changed: data a clone's parent holds does not count. */
#define IMG_CHANGED_OWN_LAYER (1u << 0)
/*
 * For an image whose disk is its storage byte for byte (raw data in an RBD
 * image, rbd: names, maybe at a snapshot): whether the range at off starts
 * with data that may differ from snapshot from of the same storage (NULL:
 * data at all, as against never-written storage), and for how many bytes
 * (*n <= len) that holds. -ENOTSUP for any other image.
 */
int img_changed(struct img *img, const char *from, unsigned flags, uint64_t off,
		uint64_t len, bool *changed, uint64_t *n);
/*
 * Create the storage named child (rbd:POOL/IMAGE) as a copy-on-write clone
 * of size bytes of parent, a snapshot of storage that makes clones
 * (rbd:POOL/IMAGE@SNAP, reached with its conf and id; the child in the same
 * cluster), protecting the snapshot first if it is not. -ENOTSUP for other
 * storage.
 */
int img_clone(const char *parent, const char *child, uint64_t size);

/* ---- measure ---- */

struct img_measure {
	uint64_t required;
	uint64_t fully_allocated;
	/* Both the source and the new image store persistent bitmaps: the
	 * bytes copying the source's bitmaps takes (qemu's "bitmaps"). */
	bool has_bitmaps;
	uint64_t bitmaps;
};

/*
 * Space a new image of format/opts would need to hold src's contents (src may
 * be NULL: an empty image of opts->size).
 */
int img_measure(const struct img_create_opts *opts, struct img *src,
		struct img_measure *out);

/* ---- compression (lib/compress.c) ---- */

enum img_compress_type {
	IMG_COMPRESS_DEFLATE_RAW, /* raw deflate (qcow2 "zlib") */
	IMG_COMPRESS_DEFLATE_ZLIB, /* zlib-wrapped deflate (VMDK grains) */
	IMG_COMPRESS_ZSTD, /* one zstd frame (qcow2 "zstd") */
};

/*
 * Compress len bytes at src into dst as one stream at level (0: the codec's
 * default: zstd 3 as QEMU; deflate 4 of libdeflate's 1-12, about as small as
 * QEMU's zlib 6). Returns the compressed length, or -ENOSPC (no message)
 * when it would not fit in dst_size bytes: the data does not compress enough. -EINVAL for a bad type or level. Thread-safe.
 */
int img_compress(enum img_compress_type type, int level, const void *src,
		 size_t len, void *dst, size_t dst_size);
/*
 * Decompress into exactly dst_len bytes: bytes after them in src are ignored,
 * a stream that ends early or is invalid gives -IMG_ECORRUPT. Thread-safe.
 * One call is one cluster or grain, which bounds the work an image can ask
 * of it: dst_len at most IMG_MAX_DECOMPRESS_OUT, src_len at most twice that
 * (-EINVAL beyond).
 */
#define IMG_MAX_DECOMPRESS_OUT (2u << 20) /* qcow2's largest cluster */
int img_decompress(enum img_compress_type type, const void *src, size_t src_len,
		   void *dst, size_t dst_len);

/*
 * How img_write_compressed() wants its data: the codec (*type) and the unit
 * (*cluster_size: one call stores one cluster). -ENOTSUP with a message if
 * the image cannot store compressed data (format, encryption, data file).
 * Returns 1 when the image stores nothing but compressed data (VMDK
 * streamOptimized: convert compresses without -c), else 0.
 */
int img_compress_params(struct img *img, enum img_compress_type *type,
			uint64_t *cluster_size);
/* One cluster's compressed data for img_write_compressed(). */
struct img_compressed {
	uint64_t off; /* guest offset, cluster aligned */
	const void *data; /* from img_compress() with the type above */
	size_t len; /* smaller than the cluster */
};

/*
 * Store n clusters given compressed; the last cluster of an image whose size
 * is not a multiple of the cluster size is compressed zero-padded to a whole
 * cluster. The data is packed back to back in the host file as QEMU does,
 * clusters of one call in order, with as few host writes as that allows.
 */
int img_write_compressed(struct img *img, const struct img_compressed *v,
			 size_t n);

/* ---- chain operations: commit, rebase, amend (lib/commit.c, rebase.c,
 * amend.c) ---- */

/* Progress of a long operation: fn(opaque, done, total) as work advances,
 * in the operation's own units (bytes or steps). */
struct img_progress {
	void (*fn)(void *opaque, uint64_t done, uint64_t total);
	void *opaque;
};

/*
 * The layer of img's backing chain (img itself excluded) that name designates:
 * the backing name an overlay records for it, or a path naming the same file
 * (relative to the working directory). NULL if none.
 */
struct img *img_chain_find(struct img *img, const char *name);

#define IMG_COMMIT_KEEP (1u << 0) /* leave the top image's data (-d) */

/*
 * Write every range the layers above base allocate (top and the layers
 * between) into base, a layer of top's backing chain (NULL: top's backing),
 * growing base to top's size if it is smaller; base is reopened read-write
 * for this. Then, unless IMG_COMMIT_KEEP, empty top (every range becomes
 * unallocated; top must be read-write). No header changes: the chain stays
 * as it was and reads of top return the same data throughout. -EINVAL if
 * top has no backing or base is not in its chain. progress may be NULL.
 */
int img_commit(struct img *top, struct img *base, unsigned flags,
	       const struct img_progress *progress);

#define IMG_REBASE_UNSAFE (1u << 0) /* only rewrite the header (-u) */

/*
 * Make backing (a name recorded as is and resolved relative to img; NULL or
 * "" for none) of format fmt img's backing file. Safe mode (img opened with
 * its chain) first copies into img every range it does not allocate whose
 * contents differ between the old and the new backing, so that reads of img
 * return the same data afterwards. fmt is required with a backing name.
 * The chain is reopened on the new backing; if that fails, the old chain is
 * reopened and the error returned. progress may be NULL.
 */
int img_rebase(struct img *img, const char *backing, const char *fmt,
	       unsigned flags, const struct img_progress *progress);

/*
 * Change format options of an image opened read-write (qemu-img amend -o):
 * the keys the format's amend accepts (qcow2: compat, lazy_refcounts,
 * refcount_bits, backing_file, backing_fmt, data_file, data_file_raw, size).
 * Unknown keys fail -EINVAL naming the key. progress counts steps.
 */
int img_amend(struct img *img, const struct img_kv *opts, size_t n_opts,
	      const struct img_progress *progress);
/* The options a format's amend accepts, as img_create_help lays them out. */
int img_amend_help(const char *format, char *buf, size_t buf_size);

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
	unsigned flags; /* IMG_FUA (WRITE, ZERO, DISCARD), IMG_ZERO_* */
	/* Called once with the result (0 or -errno), on the thread that
	 * polls the engine (img_aio_poll, img_aio_wait, img_aio_drain). */
	void (*done)(struct img_aio_req *req, int ret);
	/* Optional: called just before the request's I/O starts (on the
	 * submitting thread or a pool worker); a negative return skips it,
	 * and done() gets that result. */
	int (*start)(struct img_aio_req *req);
	void *opaque;
	/* Error message when ret < 0 (valid during done()). */
	const char *error;
};

/*
 * An async engine: an io_uring ring that the data of reads and writes the
 * driver maps straight to the host file goes on from the submitting thread
 * (many requests in flight), and a pool of at most nthreads workers (0 = one
 * per CPU, at least 2; started on first use) for requests that need the
 * driver's metadata work, flushes, zeroes and discards, or when io_uring is
 * not available. One thread at a time submits; completions are delivered
 * by polling, from any thread. Requests complete in any order.
 */
int img_aio_new(unsigned nthreads, struct img_aio **out);
/* Start req on img; req must stay valid until done() is called. A request
 * that fails to start completes with the error like any other. */
int img_aio_submit(struct img_aio *aio, struct img *img,
		   struct img_aio_req *req);
/* Readable (POLLIN) when completions are waiting for img_aio_poll. */
int img_aio_fd(const struct img_aio *aio);
/* Deliver the completions ready now (done() on this thread), without
 * blocking: how many, or -errno. */
int img_aio_poll(struct img_aio *aio);
/* Deliver at least one completion, blocking until one is ready; 0 when
 * nothing is in flight. */
int img_aio_wait(struct img_aio *aio);
/* Requests submitted whose done() has not been called yet. */
unsigned img_aio_inflight(const struct img_aio *aio);
/* Whether the engine has an io_uring ring (else everything runs on the
 * pool). */
bool img_aio_uses_ring(const struct img_aio *aio);
/* Run req on img on the calling thread, as a worker would, and return its
 * result (0 or -errno, message in img_last_error()); done() is not called. */
int img_aio_run(struct img *img, struct img_aio_req *req);
/*
 * Take the requests whose opaque is opaque off the pool's queue before a
 * worker starts them; they complete with -ECANCELED (delivered by the next
 * poll). Requests on the ring or running are not touched. Returns how many
 * were cancelled.
 */
int img_aio_cancel(struct img_aio *aio, const void *opaque);
/* Deliver completions until every submitted request has completed. */
void img_aio_drain(struct img_aio *aio);
/* Drain and free the engine. NULL is a no-op. */
void img_aio_free(struct img_aio *aio);

/* ---- pipelined reads (lib/pipeline.c) ---- */

#define IMG_PIPE_MAX_READS 2
#define IMG_PIPE_MSG_MAX 512

struct img_pipe_read {
	struct img *img; /* set by next() */
	uint64_t off, len; /* set by next(); len <= the buffer size */
	uint8_t *buf; /* the data (a buffer of the pipeline's) */
	int ret; /* 0 or -errno */
	char msg[IMG_PIPE_MSG_MAX]; /* the error message when ret < 0 */
};

struct img_pipe_chunk {
	uint64_t off, len; /* the caller's, untouched */
	unsigned kind; /* the caller's, untouched */
	bool last; /* the caller's, untouched */
	unsigned n_reads; /* set by next(): 0..IMG_PIPE_MAX_READS */
	struct img_pipe_read reads[IMG_PIPE_MAX_READS];
	int ret; /* -errno: next() failed making this chunk */
	char msg[IMG_PIPE_MSG_MAX]; /* next()'s message when ret < 0 */
};

struct img_pipe_ops {
	/* Describe the next chunk in *c (zeroed): 1, 0 when there is no
	 * more, or -errno, which ends production: c is then consumed in
	 * turn with c->ret set and no reads. */
	int (*next)(void *opaque, struct img_pipe_chunk *c);
	/* Called on the calling thread with each chunk in the order next()
	 * made them, once its reads are done (each with its own result).
	 * Non-zero stops the pipeline, and img_pipe_run returns it. */
	int (*consume)(void *opaque, struct img_pipe_chunk *c);
};

/*
 * Read ahead through an async engine: up to depth chunks (at most 32) are
 * in flight while earlier ones are consumed, though none ahead while reads
 * complete as soon as they are made (the page cache); reads use buffers of
 * buf_size bytes allocated on first use. Returns 0 when next() ran out and every
 * chunk was consumed, what consume() returned to stop, or -errno for a
 * failure of the pipeline itself (message in img_last_error()).
 */
int img_pipe_run(const struct img_pipe_ops *ops, void *opaque,
		 uint64_t buf_size, unsigned depth);
/* The chunk's first error (next()'s, then its reads' in order) with its
 * message set in img_last_error(), or 0. */
int img_pipe_error(const struct img_pipe_chunk *c);

/* ---- persistent dirty bitmaps (qcow2; lib/bitmap.c) ---- */

/* struct img_bitmap_info.flags */
#define IMG_BITMAP_IN_USE (1u << 0) /* inconsistent: can only be removed */
#define IMG_BITMAP_AUTO (1u << 1) /* enabled: writes mark it dirty */

struct img_bitmap_info {
	char *name;
	uint64_t granularity; /* guest bytes per bit */
	unsigned flags; /* IMG_BITMAP_* */
};

/* The image's bitmaps in directory order (free with img_bitmap_list_free);
 * -ENOTSUP for formats that cannot store bitmaps. */
int img_bitmap_list(struct img *img, struct img_bitmap_info **out, size_t *n);
void img_bitmap_list_free(struct img_bitmap_info *list, size_t n);
/*
 * Add an empty bitmap (-EEXIST if the name is taken). granularity: a power
 * of two from 512 to 2^31, or 0 for the default (the cluster size clamped to
 * 4 KiB..64 KiB, as QEMU). Disabled bitmaps do not track writes.
 */
int img_bitmap_add(struct img *img, const char *name, uint64_t granularity,
		   bool disabled);
int img_bitmap_remove(struct img *img, const char *name);
int img_bitmap_clear(struct img *img, const char *name);
int img_bitmap_enable(struct img *img, const char *name, bool enable);
/* Mark dirty in img's bitmap name every range dirty in src's bitmap
 * src_name (src may be img); both images must have the same size. */
int img_bitmap_merge(struct img *img, const char *name, struct img *src,
		     const char *src_name);
/*
 * Whether guest byte off is dirty in bitmap name, and for how many bytes
 * from off (1..len) that stays so. Errors: -ENOENT (no such bitmap),
 * -EINVAL (inconsistent bitmap, or the range is outside the image).
 */
int img_bitmap_dirty(struct img *img, const char *name, uint64_t off,
		     uint64_t len, bool *dirty, uint64_t *run_len);

/* ---- programs ---- */
/*
 * The path of program NAME installed next to the running executable (img
 * finds img-fuse, img-fuse finds img), else NAME itself for a PATH lookup.
 * malloc'd; NULL when out of memory.
 */
char *img_sibling_program(const char *name);

#ifdef __cplusplus
}
#endif

#endif
