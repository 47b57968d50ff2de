/* SPDX-License-Identifier: MIT */
/*
 * The API between libimg's core and its format drivers: struct img_driver
 * (what a format implements), struct img_io (the host-file I/O below every
 * driver), the metadata table cache, create-option getters and endian helpers.
 * A driver includes this header and lib/img.h, never lib/internal.h.
 */
#ifndef IMG_DRIVER_H
#define IMG_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "img.h"
#include "img-crypto.h"

/* ---- host-file I/O ---- */

/* img_io_open() flags */
#define IMG_IO_RDONLY (1u << 0)
#define IMG_IO_CREATE (1u << 1) /* create, truncating an existing file */
#define IMG_IO_DIRECT \
	(1u << 2) /* O_DIRECT; the backend bounces unaligned I/O */
#define IMG_IO_NOFLUSH (1u << 3) /* flush is a no-op (cache=unsafe) */
/* Read-only and letting others write (-U): no lock keeps writers out. */
#define IMG_IO_SHARED (1u << 4)
/* img_io_open_relative only: the name must resolve (symlinks included)
 * beneath the image's directory, else -EXDEV. */
#define IMG_IO_BENEATH (1u << 5)

/* img_io_zero() flags */
#define IMG_IO_ZERO_PUNCH (1u << 0) /* may deallocate (punch a hole) */
/* only where the backend zeroes without writing; else -ENOTSUP, no message */
#define IMG_IO_ZERO_NO_WRITE (1u << 1)

struct img_io;

/* One element of a batch: a read or write of one buffer. */
struct img_io_vec {
	void *buf;
	uint64_t len;
	uint64_t file_off;
	bool write;
};

/* The snapshot op of struct img_io_ops. */
enum img_io_snap_op {
	IMG_IO_SNAP_CREATE,
	IMG_IO_SNAP_APPLY,
	IMG_IO_SNAP_DELETE,
	IMG_IO_SNAP_LOAD,
};

struct img_io_ops {
	const char *name; /* "io_uring", "psync", "mem", "faulty", "rbd" */
	/* Full transfers or -errno; reads past EOF return zeroes (guest data
	 * reads go through img_data_check first, so that lost data is an
	 * error and not zeroes). */
	int (*pread)(struct img_io *io, void *buf, uint64_t len,
		     uint64_t file_off);
	int (*pwrite)(struct img_io *io, const void *buf, uint64_t len,
		      uint64_t file_off);
	/* Run n transfers, possibly in parallel; all done before return.
	 * Returns 0 or the first -errno. NULL: done one by one. */
	int (*submit)(struct img_io *io, struct img_io_vec *v, unsigned n);
	int (*flush)(struct img_io *io);
	/* Make the range read as zeroes; -ENOTSUP if it cannot be done cheaply. */
	int (*zero)(struct img_io *io, uint64_t file_off, uint64_t len,
		    unsigned flags);
	/* Reserve space (fallocate mode 0); -ENOTSUP if not supported. */
	int (*allocate)(struct img_io *io, uint64_t file_off, uint64_t len);
	int (*get_size)(struct img_io *io, uint64_t *size);
	int (*truncate)(struct img_io *io, uint64_t size);
	/* SEEK_DATA/SEEK_HOLE: is file_off in data, and for how many bytes
	 * (at most len). NULL: everything is data. */
	int (*extent)(struct img_io *io, uint64_t file_off, uint64_t len,
		      bool *data, uint64_t *extent_len);
	/* Bytes the host allocates for the file (st_blocks * 512). */
	int (*allocated)(struct img_io *io, uint64_t *bytes);
	void (*close)(struct img_io *io);

	/*
	 * Optional: storage with snapshots, clones and change tracking of its
	 * own (rbd). lib/snapshot.c offers them as the image's when the
	 * image's disk is the file byte for byte (img_set_file_is_disk), as
	 * QEMU's raw format passes snapshots to its file. NULL: none.
	 *
	 * snapshot: snapshots are found by id first, then by name; LOAD
	 * switches the io to a read-only view of one. *size: the file's size
	 * afterwards. The caller holds the image's lock.
	 */
	int (*snapshot)(struct img_io *io, enum img_io_snap_op op,
			const char *name_or_id, uint64_t *size);
	int (*snapshot_list)(struct img_io *io, struct img_snapshot_info **out,
			     size_t *n);
	/* Whether [file_off, file_off + len) starts with data that may differ
	 * from snapshot from (NULL: data at all), and for how many bytes *n
	 * (<= len) that holds; flags: IMG_CHANGED_*. */
	int (*changed)(struct img_io *io, const char *from, unsigned flags,
		       uint64_t file_off, uint64_t len, bool *changed,
		       uint64_t *n);
	/* Create the storage named child as a copy-on-write clone of the
	 * snapshot this io was opened at (read-only), of size bytes. */
	int (*clone)(struct img_io *io, const char *child, uint64_t size);
};

struct img_io {
	const struct img_io_ops *ops;
	char *path; /* for messages; may be NULL */
	unsigned flags; /* IMG_IO_* it was opened with */
	/* File size last seen by lib/io.c (set by size queries and truncate,
	 * raised by writes; 0 = not known yet). Accessed atomically. It lets
	 * img_io_holds() skip the size query on every data read; only
	 * another process shrinking the file makes it stale. */
	uint64_t size_seen;
};

/*
 * Open a host file. kind selects the backend (IMG_IO_AUTO: io_uring if a ring
 * can be set up on this thread, else psync).
 */
int img_io_open(const char *path, unsigned flags, enum img_io_kind kind,
		struct img_io **out);
/*
 * Open name beneath directory dir: every component, symlinks included, must
 * resolve inside dir (a symlink staying inside is fine; "..", absolute names,
 * magic links and symlinks leading out fail -EXDEV with a message). The
 * descriptor checked is the one used: no window between check and open.
 * Names starting with "rbd:" are refused (-EXDEV): rbd has no directory.
 */
int img_io_open_beneath(const char *dir, const char *name, unsigned flags,
			enum img_io_kind kind, struct img_io **out);
/* A growable in-memory file initialised with a copy of data (may be NULL). */
int img_io_mem_new(const void *data, size_t len, struct img_io **out);
/* Contents of a mem backend (valid until the next write or close). */
void img_io_mem_data(struct img_io *io, const uint8_t **data, size_t *len);

/* Wrappers that validate arguments and supply defaults for NULL ops. */
int img_io_pread(struct img_io *io, void *buf, uint64_t len, uint64_t file_off);
int img_io_pwrite(struct img_io *io, const void *buf, uint64_t len,
		  uint64_t file_off);
int img_io_submit(struct img_io *io, struct img_io_vec *v, unsigned n);
int img_io_flush(struct img_io *io);
/* Zero a range: ops->zero, else writes of zeroes (unless IMG_IO_ZERO_PUNCH
 * only was asked and the backend cannot: then writes too). */
int img_io_zero(struct img_io *io, uint64_t file_off, uint64_t len,
		unsigned flags);
int img_io_allocate(struct img_io *io, uint64_t file_off, uint64_t len);
int img_io_size(struct img_io *io, uint64_t *size);
int img_io_truncate(struct img_io *io, uint64_t size);
int img_io_extent(struct img_io *io, uint64_t file_off, uint64_t len,
		  bool *data, uint64_t *extent_len);
int img_io_allocated(struct img_io *io, uint64_t *bytes);
void img_io_close(struct img_io *io);
/*
 * Whether the file holds every byte below end: 1, or 0 with *size set to
 * the file's size, or -errno. Without a query when end is within the size
 * last seen; the size is asked for again before answering 0, so a file
 * grown behind this io is never called short.
 */
int img_io_holds(struct img_io *io, uint64_t end, uint64_t *size);

/* ---- create-time options (-o key=value) ---- */

/* struct img_opt_desc (img.h) lists them; a driver's create_opts table is in
 * the order qemu's tables give them, with qemu's defaults. */

/*
 * Look up key in opts. Return 1 and set *out when present (the last one wins),
 * 0 (leaving *out untouched) when absent, -EINVAL with a message when the value
 * does not parse as the type.
 */
int img_opt_str(const struct img_create_opts *opts, const char *key,
		const char **out);
int img_opt_size(const struct img_create_opts *opts, const char *key,
		 uint64_t *out);
int img_opt_u64(const struct img_create_opts *opts, const char *key,
		uint64_t *out);
int img_opt_bool(const struct img_create_opts *opts, const char *key,
		 bool *out);
/* The preallocation option: off, metadata, falloc, full. */
int img_opt_prealloc(const struct img_create_opts *opts,
		     enum img_prealloc *out);

/* ---- the driver interface ---- */

/*
 * What a driver's .map says about a guest range of its own layer (issue 14:
 * drivers translate, the core moves the data). One extent starts at the
 * guest offset asked for and covers len bytes (1..the length asked for) of
 * uniform kind:
 * - flags: the IMG_EXT_* bits block status reports for this layer, exactly
 *   as .block_status would (ALLOCATED, DATA, ZERO, OFFSET_VALID,
 *   COMPRESSED, ENCRYPTED). Without IMG_EXT_ALLOCATED the range is not
 *   this layer's: the core reads it from the backing file, or as zeroes
 *   when there is none. With IMG_EXT_ZERO it reads as zeroes (an io and
 *   host offset may still be reported, as for a preallocated zero
 *   cluster).
 * - io, file_off: with IMG_EXT_DATA and IMG_EXT_OFFSET_VALID, the guest
 *   bytes are the len bytes at file_off in io (NULL io: img_file(img)),
 *   unless a transform below applies. The core checks that they lie inside
 *   the file (img_data_check) before reading.
 * - IMG_EXT_COMPRESSED: the extent lies within one compressed cluster of
 *   cluster_size bytes whose stream is the clen bytes at file_off in io
 *   (codec: img_decompress); the guest bytes are the decompressed cluster's
 *   bytes [in_cluster, in_cluster + len). The stream's last 512-byte
 *   sector may run past the end of the file (qcow2 descriptors count whole
 *   sectors); every byte before it must be in the file.
 * - IMG_EXT_ENCRYPTED: the bytes at file_off are ciphertext for cipher
 *   (lib/crypto-luks.c: img_cipher_run); reads decrypt after the read,
 *   writes encrypt into a bounce buffer.
 * The core sets want_zero before the call (QEMU's block status has the same
 * flag): false when it maps for a read, where a driver may skip costly zero
 * detection (raw's SEEK_HOLE) and call data that reads as zeroes data.
 *
 * Writes (write != IMG_MAP_NO_WRITE): the extent is where the guest bytes
 * go. flags are IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID
 * (plus IMG_EXT_ENCRYPTED and cipher: the core encrypts), and the bytes go
 * to file_off in io. The driver plans, the core moves the data:
 * - region_off, region_len: the guest range the core writes as one host
 *   range (region_len 0: the extent itself). It holds the extent; what lies
 *   outside the extent the core fills with the layer's current contents
 *   (a read through .map: copy-on-write from the old cluster, the backing
 *   file or zeroes; the rest of a cipher sector). Its host offset is
 *   file_off - (off - region_off). Encrypted regions are whole sectors.
 * - plan: NULL when the write changes no table (an overwrite in place).
 *   Otherwise the driver has reserved what the write needs (new clusters,
 *   allocated and counted, with their tables, but no table names them yet)
 *   and the core calls .commit(img, plan, result) exactly once after the
 *   region is written: on success the driver makes its tables name the new
 *   data, in the order that keeps its crash safety; on failure it releases
 *   what it reserved. Only a driver that is not thread_safe plans.
 * - lock_off, lock_len: with a plan or a region wider than the extent, the
 *   guest range no other write, zero or discard may map until the commit
 *   (whole clusters whose entries the plan changes); 0: the region.
 * With IMG_MAP_WRITE_IN_PLACE (the async engine's submitting thread) the
 * driver reserves nothing: an extent it cannot overwrite in place with no
 * plan and no wider region comes back with flags 0 (and its length).
 */
struct img_cipher;
struct img_plan; /* a driver's own: the core only passes it to .commit */

enum img_map_write {
	IMG_MAP_NO_WRITE, /* a read, or block status */
	IMG_MAP_WRITE_IN_PLACE, /* a write, only where nothing is reserved */
	IMG_MAP_WRITE, /* a write: plan what it needs */
};

struct img_map {
	uint64_t len;
	unsigned flags; /* IMG_EXT_* */
	struct img_io *io;
	uint64_t file_off;
	/* IMG_EXT_COMPRESSED */
	enum img_compress_type codec;
	uint64_t clen;
	uint64_t cluster_size;
	uint64_t in_cluster;
	/* IMG_EXT_ENCRYPTED */
	struct img_cipher *cipher;
	bool want_zero; /* in: block status (true) or a read (false) */
	enum img_map_write write; /* in */
	/* out, writes only */
	uint64_t region_off, region_len;
	struct img_plan *plan;
	uint64_t lock_off, lock_len;
};

/*
 * A format driver. The core (lib/request.c) guarantees every I/O op that
 * off + len <= size, len > 0, and no write/zero/discard on a read-only image.
 * Ops are called under the image's lock unless .thread_safe is set.
 * A NULL optional op means "not supported" and the core supplies a default.
 * Only lib/backend.c calls the ops, and it checks what they return: 0 or
 * -errno (a positive value is a driver bug, reported as -EIO naming the
 * driver and the op), lengths and counts within what was asked.
 */
struct img_driver {
	const char *name;
	size_t priv_size; /* bytes the core allocates (zeroed) for img_priv() */
	bool thread_safe; /* ops may be called concurrently */

	/* 0..100: how sure the first bytes (len >= 512 unless the file is
	 * shorter) are this format. raw returns 1. */
	int (*probe)(const uint8_t *buf, size_t len);

	/* Open img whose host file is img_file(img). Set the virtual size with
	 * img_set_size() and the backing name with img_set_backing_name().
	 * flags are IMG_OPEN_*. On failure, close is not called. */
	int (*open)(struct img *img, unsigned flags);
	/* Release everything the state holds. Write-back and flush happen in
	 * .flush, which the core calls before close on a writable image. */
	void (*close)(struct img *img);

	/* Zero [off, off + len) by changing tables only (flags IMG_ZERO_*),
	 * or with IMG_ZERO_DISCARD deallocate what can be. -ENOTSUP: what
	 * that cannot do, where the core writes zeroes (a discard does
	 * nothing). NULL: the core writes zeroes, and discard does nothing. */
	int (*zero)(struct img *img, uint64_t off, uint64_t len,
		    unsigned flags);
	/* Write back cached metadata and flush the host file(s). NULL: flush
	 * the host file. */
	int (*flush)(struct img *img);
	/* Translate [off, off + len) of this layer: fill *m with the first
	 * extent (struct img_map), for a read, block status or a write.
	 * Called under the image's lock unless .thread_safe; a host range it
	 * returns stays valid while the core transfers it without the lock
	 * (a driver calls img_direct_drain() before it frees, shares or moves
	 * a host range a map may have returned). Required: reads, writes and
	 * block status are built on it (an encrypted extent's host offset is
	 * not reported by block status, as QEMU does not). A format that
	 * cannot write fails a write map with -ENOTSUP. */
	int (*map)(struct img *img, uint64_t off, uint64_t len,
		   struct img_map *m);
	/* Make the tables name the data of a planned write (struct img_map:
	 * plan), called under the image's lock once the region is written
	 * (result 0), or release what the plan reserved (result < 0: the
	 * data may be half written; the tables must not name it). Frees the
	 * plan in both cases. NULL: the driver never plans. */
	int (*commit)(struct img *img, struct img_plan *plan, int result);

	const struct img_create_ops *create; /* NULL: cannot create images */

	/* Add cluster_size, dirty and format-specific fields to *info (the
	 * core fills the generic ones first). */
	int (*info)(struct img *img, struct img_info *info);
	int (*check)(struct img *img, unsigned flags, struct img_check *res);

	/* Optional op tables: a NULL table (or member) means the format does
	 * not support it, and the core answers -ENOTSUP as documented in
	 * img.h (make_empty: nothing to do; crypt: -ENOTSUP, no message). */
	const struct img_snapshot_ops *snapshot;
	const struct img_amend_ops *amend;
	const struct img_compress_ops *compress;
	const struct img_bitmap_ops *bitmap;
	const struct img_crypt_ops *crypt;
};

/* Creating and measuring new images (lib/image.c checks the options). */
struct img_create_ops {
	/* Create the image in file (already created and empty); path is its
	 * name, for resolving relative names. opts->size is set. */
	int (*create)(const char *path, struct img_io *file,
		      const struct img_create_opts *opts);
	const struct img_opt_desc *opts; /* NULL-name terminated */
	int (*measure)(const struct img_create_opts *opts, struct img *src,
		       struct img_measure *out);
};

/*
 * Internal snapshots (see img.h; lib/snapshot.c checks names and read-only
 * and takes the image lock). apply sets the size with img_set_size(). list
 * returns a malloc'd array of n entries (NULL when n is 0), each with a
 * malloc'd id and name.
 */
struct img_snapshot_ops {
	int (*list)(struct img *img, struct img_snapshot_info **out, size_t *n);
	int (*create)(struct img *img, const char *name);
	int (*apply)(struct img *img, const char *name_or_id);
	int (*delete)(struct img *img, const char *name_or_id);
	/* Turn a just-opened read-only image into a view of the snapshot
	 * (img_open_opts.snapshot): reads see its disk, size its disk size. */
	int (*load)(struct img *img, const char *name_or_id);
};

/* Changing an existing image's header (lib/amend.c, image.c, commit.c take
 * the lock; amend.c handles "size"). */
struct img_amend_ops {
	/* img_amend: change the options in opts; unknown keys fail -EINVAL
	 * naming the key. progress may be NULL. */
	int (*amend)(struct img *img, const struct img_kv *opts, size_t n,
		     const struct img_progress *progress);
	const struct img_opt_desc *opts; /* NULL-name terminated */
	/* Rewrite the backing name/format in the image (NULL name: none). */
	int (*set_backing)(struct img *img, const char *name, const char *fmt);
	/* Make every range unallocated so the backing shows through (after a
	 * commit). NULL: the image is left as it is, as qemu-img does. */
	int (*make_empty)(struct img *img);
	/* img_resize (the core checks read-only, shrinking, and zeroes what
	 * the old last block held past the old end). */
	int (*resize)(struct img *img, uint64_t size, unsigned flags,
		      enum img_prealloc prealloc);
};

/* Compressed clusters (img_compress_params, img_write_compressed in img.h;
 * the core checks bounds and read-only). */
struct img_compress_ops {
	/* 0, or 1 when the image stores only compressed data. */
	int (*params)(struct img *img, enum img_compress_type *type,
		      uint64_t *cluster_size);
	int (*write)(struct img *img, const struct img_compressed *v, size_t n);
};

/* Encryption (lib/crypto-luks.c takes the lock). */
struct img_crypt_ops {
	/* img_crypt_info; -ENOTSUP: not encrypted. */
	int (*info)(struct img *img, struct img_crypt_info *out);
};

/*
 * Persistent dirty bitmaps of a format. lib/bitmap.c checks names, ranges
 * (off + len <= size, len > 0) and read-only, and takes the image lock.
 * Unknown names fail -ENOENT, bitmaps found in use (inconsistent) -EINVAL
 * except for list and remove. Every op but set_dirty is durable on return;
 * set_dirty is stored by the next flush.
 */
struct img_bitmap_ops {
	int (*list)(struct img *img, struct img_bitmap_info **out, size_t *n);
	/* granularity: a power of two, or 0 for the format's default. */
	int (*add)(struct img *img, const char *name, uint64_t granularity,
		   bool disabled);
	int (*remove)(struct img *img, const char *name);
	int (*clear)(struct img *img, const char *name);
	int (*enable)(struct img *img, const char *name, bool enable);
	/* Mark [off, off + len) dirty (merge). */
	int (*set_dirty)(struct img *img, const char *name, uint64_t off,
			 uint64_t len);
	int (*dirty)(struct img *img, const char *name, uint64_t off,
		     uint64_t len, bool *dirty, uint64_t *run_len);
};

/* The registered drivers, NULL-terminated (formats/formats.c). */
extern const struct img_driver *const img_format_table[];

/* ---- what drivers may ask of the core about an image ---- */

void *img_priv(struct img *img);
struct img_io *img_file(struct img *img);
void img_set_size(struct img *img, uint64_t size);
/* .zero for a discard: the range need not read as zeroes afterwards. */
#define IMG_ZERO_DISCARD (1u << 30)

/* The alignment .zero works at (a power of 2; default 1): the core sends
 * the unaligned head and tail of a zero request separately, and writes
 * zeroes where .zero answers -ENOTSUP. */
void img_set_zero_align(struct img *img, uint64_t align);
/* The guest disk is img_file(img) byte for byte (set from .open): what the
 * storage offers about its bytes (struct img_io_ops snapshot, changed)
 * then applies to the disk. */
void img_set_file_is_disk(struct img *img);
/* Open flags (IMG_OPEN_*) and the metadata cache size asked for (0 = default). */
unsigned img_open_flags(const struct img *img);
uint64_t img_cache_size_hint(const struct img *img);
/* Record the backing file name (and format, may be NULL) the image names. */
int img_set_backing_name(struct img *img, const char *name, const char *fmt);
bool img_has_backing(const struct img *img);
/* Read from the backing chain; zeroes past its end or without one. */
int img_read_backing(struct img *img, void *buf, uint64_t off, uint64_t len);
/* Wait until no transfer the core mapped (.map) without the lock is running. Call with the
 * image's lock held (no new one can start then). */
void img_direct_drain(struct img *img);
/*
 * Guest data the image maps to a host range must be in the file: a range
 * that ends past the end of io is data the image claims and the file lost
 * (truncated, or a corrupt table), never zeroes. Every driver's data
 * references go through these (and lib/request.c applies the same check to
 * what .map returns).
 * img_data_check: 0, or -EIO with "<fmt>: guest offset 0x.. maps to host
 * offset 0x.. past the end of '<file>' (size N)" when [file_off, file_off +
 * len) ends past the end of io; off is the guest offset, for the message
 * (arguments in img_io_pread's order, the guest offset last).
 * img_data_read: the check, then img_io_pread.
 * img_data_check_vecs: the check on every read in v[0..n), whose buffers lie
 * in buf, the guest range starting at off.
 */
int img_data_check(struct img *img, struct img_io *io, uint64_t len,
		   uint64_t file_off, uint64_t off);
int img_data_read(struct img *img, struct img_io *io, void *buf, uint64_t len,
		  uint64_t file_off, uint64_t off);
int img_data_check_vecs(struct img *img, struct img_io *io, const void *buf,
			uint64_t off, const struct img_io_vec *v, unsigned n);
/* Open a file named relative to the image's directory (data files, extents);
 * IMG_IO_BENEATH in io_flags confines it there (img_io_open_beneath). */
int img_io_open_relative(struct img *img, const char *name, unsigned io_flags,
			 struct img_io **out);
/*
 * IMG_OPEN_UNTRUSTED: the one place refusals are worded. Returns -EPERM with
 * "untrusted: '<image file>' <what>" (what: printf-style, e.g. "names a
 * backing file 'base.qcow2'"). Drivers call it when an untrusted image names
 * another file; img_untrusted() says whether to.
 */
bool img_untrusted(const struct img *img);
int img_untrusted_refuse(const struct img *img, const char *what_fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * The cap on one metadata table whose size the image's header sets (L1,
 * refcount table, snapshot table, bitmap directory and tables, BAT, block
 * map), asked before allocating it, after the driver's own (larger) limit:
 * 0 if bytes fits, -EPERM with the refusal ("asks for <what> of N bytes,
 * above the limit of M for untrusted images") when img is untrusted and
 * bytes is above IMG_UNTRUSTED_METADATA_CAP.
 */
int img_metadata_check(const struct img *img, uint64_t bytes, const char *what);
/* Resolve name relative to the directory of base_path; malloc'd result. */
int img_path_relative(const char *base_path, const char *name, char **out);

/* ---- metadata table cache (L2 tables, refcount blocks, BAT pages) ---- */

struct img_cache;

/*
 * A cache of n tables of table_size bytes read from and written to io at
 * table-aligned host offsets. Not thread-safe: callers hold their own lock.
 */
int img_cache_new(struct img_io *io, uint64_t table_size, unsigned n,
		  struct img_cache **out);
void img_cache_free(struct img_cache *c);
/* Pin the table at file_off (read on a miss) until img_cache_put. */
int img_cache_get(struct img_cache *c, uint64_t file_off, void **table);
/* Pin a zero-filled table for file_off without reading the file. */
int img_cache_get_empty(struct img_cache *c, uint64_t file_off, void **table);
void img_cache_put(struct img_cache *c, void *table);
void img_cache_mark_dirty(struct img_cache *c, void *table);
/* Dirty tables of c are written only after dep has been written and the host
 * file flushed (qcow2: L2 tables after the refcount blocks they rely on). */
void img_cache_set_dependency(struct img_cache *c, struct img_cache *dep);
/* Write every dirty table (dependency first). Does not flush io itself. */
int img_cache_write_back(struct img_cache *c);
/* Forget the table at file_off if cached, dirty or not (cluster was freed). */
void img_cache_forget(struct img_cache *c, uint64_t file_off);

/* ---- helpers ---- */

static inline uint16_t img_be16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] << 8 | b[1]);
}

static inline uint32_t img_be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	       (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t img_be64(const void *p)
{
	return (uint64_t)img_be32(p) << 32 | img_be32((const uint8_t *)p + 4);
}

static inline void img_put_be16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 8);
	b[1] = (uint8_t)v;
}

static inline void img_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)(v >> 24);
	b[1] = (uint8_t)(v >> 16);
	b[2] = (uint8_t)(v >> 8);
	b[3] = (uint8_t)v;
}

static inline void img_put_be64(void *p, uint64_t v)
{
	img_put_be32(p, (uint32_t)(v >> 32));
	img_put_be32((uint8_t *)p + 4, (uint32_t)v);
}

static inline uint16_t img_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}

static inline uint32_t img_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

static inline uint64_t img_le64(const void *p)
{
	return img_le32(p) | (uint64_t)img_le32((const uint8_t *)p + 4) << 32;
}

static inline void img_put_le16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}

static inline void img_put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

static inline void img_put_le64(void *p, uint64_t v)
{
	img_put_le32(p, (uint32_t)v);
	img_put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

static inline bool img_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static inline uint64_t img_align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static inline uint64_t img_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* A corruption check found: count it in res->corruptions and report the
 * printf-style line through res->report when set (lib/fmt-util.c). */
void img_check_corrupt(struct img_check *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* True if len bytes at buf are all zero. */
bool img_is_zero(const void *buf, size_t len);

/* A random (version 4) UUID in on-disk byte order (lib/fmt-util.c). */
int img_uuid_generate(uint8_t uuid[16]);
/* UTF-8 s to UTF-16 (big or little endian), no terminator; malloc'd *out of
 * *out_len bytes. -EINVAL if s is not valid UTF-8. */
int img_utf8_to_utf16(const char *s, bool big_endian, uint8_t **out,
		      size_t *out_len);
/* UTF-16 (len bytes, stops at a NUL unit) to a malloc'd UTF-8 string;
 * -IMG_ECORRUPT on an unpaired surrogate. */
int img_utf16_to_utf8(const uint8_t *p, size_t len, bool big_endian,
		      char **out);
/* Write entries [lo, hi) of a host-endian table of 32-bit entries, stored
 * from table_off in the given byte order (lib/fmt-util.c). */
int img_table32_write(struct img_io *io, const uint32_t *table, uint32_t lo,
		      uint32_t hi, uint64_t table_off, bool big_endian);

#define IMG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
