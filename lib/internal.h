/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/ (and to tests): the image object, the faulty I/O backend
 * for fault injection and crash replay, and opening images on an existing
 * struct img_io.
 */
#ifndef IMG_INTERNAL_H
#define IMG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "img-driver.h"

/* The deepest backing chain img_open follows before failing -ELOOP. */
#define IMG_MAX_CHAIN_DEPTH 64
/* The largest request passed to a driver in one call; the core splits. */
#define IMG_MAX_REQUEST (32ull << 20)
/* Host transfers one mapped batch may hold (more: another round). */
#define IMG_DIRECT_MAX_VECS 64

struct img {
	const struct img_driver *drv;
	void *priv;
	struct img_io *file;
	char *filename;
	uint64_t size;
	uint64_t zero_align; /* img_set_zero_align; 0: 1 */
	unsigned flags; /* IMG_OPEN_* */
	enum img_io_kind io_kind;
	uint64_t cache_size;
	char *backing_name; /* as the image names it */
	char *backing_fmt;
	char *backing_path; /* resolved */
	struct img *backing;
	bool file_is_disk; /* img_set_file_is_disk */
	unsigned depth; /* 0 for the top image */
	const struct img_secret *secret; /* passphrase, or NULL (secret.c) */
	pthread_mutex_t lock; /* serialises driver calls unless thread_safe */
	/* In-place transfers mapped without the lock running (request.c):
	 * img_direct_drain() waits on direct_idle until none is left. */
	atomic_uint direct_inflight;
	pthread_mutex_t direct_lock;
	pthread_cond_t direct_idle;
	/* Guest ranges of planned writes between map and commit (request.c):
	 * no other write, zero or discard maps into one, and no operation
	 * that takes the image whole (img_lock_whole) starts while any is
	 * listed. Guarded by lock; waiters sleep on write_done. */
	struct img_write_lock *write_locks;
	pthread_cond_t write_done;
	/* The last cluster a compressed extent decompressed to (map-read.c);
	 * created on first use. */
	struct img_zcache *zcache;
};

/*
 * Open an image on io (taking ownership of io, also on failure). filename is
 * used for messages and for resolving a relative backing name; may be NULL.
 */
int img_open_io(struct img_io *io, const char *filename,
		const struct img_open_opts *opts, struct img **out);
/* Create an image of opts->format in io (not taking ownership). */
int img_create_io(struct img_io *io, const char *filename,
		  const struct img_create_opts *opts);

/*
 * The secret an image opened with opts uses (lib/secret.c): explicit_secret,
 * else the registered one kv names with encrypt.key-secret=ID (-EINVAL if
 * none has that id), else the default secret, else NULL.
 */
int img_secret_resolve(const struct img_kv *kv, size_t n,
		       const struct img_secret *explicit_secret,
		       const struct img_secret **out);

/*
 * Open an image on io with the driver drv (taking ownership of io, also on
 * failure), as img_open_io does for a format name: for unit tests of drivers
 * the format table does not list.
 */
int img_open_driver(struct img_io *io, const struct img_driver *drv,
		    const struct img_open_opts *opts, struct img **out);

/*
 * lib/backend.c: the only callers of a driver's ops. Each calls one op and
 * checks what it returns (see struct img_driver): a result the contract
 * rules out is -EIO with "<driver>: <op> ..." as the message. No locking and
 * no argument checks: the callers keep those. A NULL op (or op table) gives
 * the default struct img_driver documents: nothing (discard without .zero,
 * info, make_empty, close), 0 (probe), img_io_flush (flush), -ENOTSUP
 * without a message (crypt_info), else -ENOTSUP with one.
 */
int backend_probe(const struct img_driver *drv, const uint8_t *buf, size_t len);
int backend_open(struct img *img, unsigned flags);
void backend_close(struct img *img);
int backend_zero(struct img *img, uint64_t off, uint64_t len, unsigned flags);
int backend_discard(struct img *img, uint64_t off, uint64_t len);
int backend_flush(struct img *img);
/* m->len within 1..len, known flags only; m->io set (img_file(img) when the
 * driver left it NULL) for OFFSET_VALID and COMPRESSED extents; a
 * compressed extent's range within its cluster (of 512 bytes to
 * IMG_MAX_DECOMPRESS_OUT), stream length 1..2 * IMG_MAX_DECOMPRESS_OUT and
 * a known codec; an encrypted one has a cipher. */
int backend_map(struct img *img, uint64_t off, uint64_t len, struct img_map *m);
/* .commit, for a plan a write map returned. */
int backend_commit(struct img *img, struct img_plan *plan, int result);
/* The option tables of a driver (NULL: none). */
const struct img_opt_desc *backend_create_opts(const struct img_driver *drv);
const struct img_opt_desc *backend_amend_opts(const struct img_driver *drv);
int backend_create(const struct img_driver *drv, const char *path,
		   struct img_io *file, const struct img_create_opts *opts);
/* required <= fully_allocated. */
int backend_measure(const struct img_driver *drv,
		    const struct img_create_opts *opts, struct img *src,
		    struct img_measure *out);
/* format and virtual_size untouched, cluster_size 0 or a power of two,
 * fields named and string fields set. */
int backend_info(struct img *img, struct img_info *info);
/* With has_stats: allocated <= total, fragmented and compressed <=
 * allocated. */
int backend_check(struct img *img, unsigned flags, struct img_check *res);
int backend_resize(struct img *img, uint64_t size, unsigned flags,
		   enum img_prealloc prealloc);
/* A list of n > 0 entries exists, each with an id and a name. */
int backend_snapshot_list(struct img *img, struct img_snapshot_info **out,
			  size_t *n);
int backend_snapshot_create(struct img *img, const char *name);
int backend_snapshot_apply(struct img *img, const char *name_or_id);
int backend_snapshot_delete(struct img *img, const char *name_or_id);
int backend_snapshot_load(struct img *img, const char *name_or_id);
int backend_amend(struct img *img, const struct img_kv *opts, size_t n,
		  const struct img_progress *progress);
int backend_set_backing(struct img *img, const char *name, const char *fmt);
int backend_make_empty(struct img *img);
/* 0 or 1; a known codec, a power-of-two cluster size of at least 512. */
int backend_compress_params(struct img *img, enum img_compress_type *type,
			    uint64_t *cluster_size);
int backend_write_compressed(struct img *img, const struct img_compressed *v,
			     size_t n);
/* A format named, at most IMG_CRYPT_MAX_SLOTS slots. */
int backend_crypt_info(struct img *img, struct img_crypt_info *out);
/* A list of n > 0 entries exists, each named, power-of-two granularity. */
int backend_bitmap_list(struct img *img, struct img_bitmap_info **out,
			size_t *n);
int backend_bitmap_add(struct img *img, const char *name, uint64_t granularity,
		       bool disabled);
int backend_bitmap_remove(struct img *img, const char *name);
int backend_bitmap_clear(struct img *img, const char *name);
int backend_bitmap_enable(struct img *img, const char *name, bool enable);
int backend_bitmap_set_dirty(struct img *img, const char *name, uint64_t off,
			     uint64_t len);
/* *run_len within 1..len. */
int backend_bitmap_dirty(struct img *img, const char *name, uint64_t off,
			 uint64_t len, bool *dirty, uint64_t *run_len);
/*
 * The transforms of the .map read path (lib/map-read.c): read extent m
 * (IMG_EXT_COMPRESSED, or IMG_EXT_ENCRYPTED) of guest offset off into buf,
 * checking every value of m first. Thread-safe.
 */
int img_read_compressed(struct img *img, const struct img_map *m, void *buf,
			uint64_t off);
int img_read_encrypted(struct img *img, const struct img_map *m, void *buf,
		       uint64_t off);
/* Drop the cached cluster (a host range is being freed or moved: it is
 * called from img_direct_drain), and free the cache at close. */
void img_zcache_forget(struct img *img);
void img_zcache_free(struct img *img);

/* ---- the faulty backend: fault injection and write recording ---- */

struct img_io_log_entry {
	enum {
		IMG_LOG_WRITE,
		IMG_LOG_FLUSH,
		IMG_LOG_TRUNCATE,
		IMG_LOG_ZERO
	} kind;
	uint64_t file_off; /* TRUNCATE: the new size */
	uint64_t len;
	uint8_t *data; /* WRITE: a copy of the data */
};

/*
 * Wrap inner (taking ownership). Every op is counted; with a fault armed,
 * the op numbered fail_at (1-based) fails with -err, and with sticky every
 * later op fails too. Writes, zeroes, truncates and flushes are logged.
 */
int img_io_faulty_new(struct img_io *inner, struct img_io **out);
void img_io_faulty_arm(struct img_io *io, uint64_t fail_at, int err,
		       bool sticky);
uint64_t img_io_faulty_ops(struct img_io *io);
/* The log so far; valid until the next op on io. */
void img_io_faulty_log(struct img_io *io,
		       const struct img_io_log_entry **entries, size_t *n);
/* Apply log entries [0, n) to a mem backend (crash replay). */
int img_io_log_apply(struct img_io *mem, const struct img_io_log_entry *entries,
		     size_t n);

/* ---- the transfer fast path (request.c) and the async engine (aio.c) ---- */

/*
 * Map a read or write of [off, off + len) (len <= IMG_MAX_REQUEST, checked
 * by the caller) straight to host transfers on *io through the driver's
 * .map (writes only where they go in place, reserving nothing): 1 with
 * vecs[0, *n) filled (*n holds the capacity, at most IMG_DIRECT_MAX_VECS, on
 * entry; a read's zero extents are filled in buf) and a transfer counted in
 * flight, which the caller ends with img_direct_release() once the vecs are
 * done; 0 when the request needs the normal path (img_read, img_write);
 * -errno.
 */
int img_direct_map(struct img *img, void *buf, uint64_t off, uint64_t len,
		   bool write, struct img_io **io, struct img_io_vec *vecs,
		   unsigned *n);
void img_direct_release(struct img *img);
/*
 * Take the image's lock for an operation on the image as a whole (snapshots,
 * amend, resize, bitmaps, check, compressed writes): waits until no planned
 * write is between its map and its commit, so every table is settled.
 * Release with pthread_mutex_unlock(&img->lock).
 */
void img_lock_whole(struct img *img);
/* Reap the completed ring transfers of every engine whose completion side
 * is free (img_direct_drain, while it waits). */
void img_aio_reap_all(void);
/* The descriptor of a local-file backend (psync, io_uring), else -1. */
int img_io_fd(struct img_io *io);
/* Whether a transfer may go to the descriptor as it is (O_DIRECT files need
 * aligned buffers, lengths and offsets; lib/io.c bounces the others). */
bool img_io_transfer_ok(const struct img_io *io, const void *buf, uint64_t len,
			uint64_t file_off);
/* A write up to end succeeded behind lib/io.c (the engine's ring): the file
 * is at least that long now. */
void img_io_wrote(struct img_io *io, uint64_t end);

/* ---- layers and chains (image.c, chain.c) ---- */

/*
 * Open one layer of a chain on io (taking ownership of io, also on failure)
 * at chain depth depth, without opening its backing chain.
 */
int img_open_layer(struct img_io *io, const char *filename,
		   const struct img_open_opts *opts, unsigned depth,
		   struct img **out);
/*
 * Open the backing chain img's driver recorded (img->backing_name), read-only,
 * and attach it as img->backing. On failure img->backing stays NULL.
 */
int img_chain_open(struct img *img);
/* -EPERM with the refusal when img is untrusted and names the backing file
 * name (NULL or "": none), else 0. Every driver records its backing through
 * img_set_backing_name, which asks this. */
int img_chain_refuse_untrusted(const struct img *img, const char *name);

/* Switch a just-opened read-only image to the view of an internal snapshot
 * (img_open_opts.snapshot; lib/snapshot.c). */
int img_snapshot_load(struct img *img, const char *name_or_id);

/*
 * Is [off, off + *n) allocated in one of the layers from top down to base,
 * base excluded (1), or not (0)? Sets *n (1..len, uniform status) and, when
 * allocated, *zero if it reads as zeroes (a range past the end of a short
 * layer counts as zeroes allocated there). lib/commit.c.
 */
int img_chain_allocated_above(struct img *top, struct img *base, uint64_t off,
			      uint64_t len, uint64_t *n, bool *zero);

/* ---- host-file backends behind img_io_open (lib/io-psync.c, io-uring.c) ---- */

int img_io_psync_open(const char *path, unsigned flags, struct img_io **out);
/* The same with path confined beneath dir (NULL: not confined), and the
 * io_uring backend's; see img_io_open_beneath. */
int img_io_psync_open_beneath(const char *dir, const char *path, unsigned flags,
			      struct img_io **out);
int img_io_uring_open_beneath(const char *dir, const char *path, unsigned flags,
			      struct img_io **out);
/* lib/confine.c: open name (no O_CREAT) beneath dir; the descriptor or
 * -errno (-EXDEV with a message when it resolves outside). */
int img_open_beneath_fd(const char *dir, const char *name, int oflags);
/* img_io_open_beneath in the directory of img's file. */
int img_open_confined(struct img *img, const char *name, unsigned io_flags,
		      struct img_io **out);
/* lib/io-lock.c: take QEMU's image locks on fd for a user opening it with
 * io_flags (IMG_IO_RDONLY, IMG_IO_SHARED); -EBUSY when another user's
 * locks conflict. */
int img_io_lock(int fd, const char *path, unsigned io_flags);
/* The file descriptor of a psync backend, -1 for any other backend. */
int img_io_psync_fd(struct img_io *io);
/* The same for an io_uring backend. */
int img_io_uring_fd(struct img_io *io);
/* -ENOSYS (or the setup error) when no io_uring ring can be set up here. */
int img_io_uring_open(const char *path, unsigned flags, struct img_io **out);
/* Names starting with "rbd:" (lib/io-rbd.c). */
int img_io_rbd_open(const char *path, unsigned flags, struct img_io **out);

#endif
