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

struct img {
	const struct img_driver *drv;
	void *priv;
	struct img_io *file;
	char *filename;
	uint64_t size;
	unsigned flags; /* IMG_OPEN_* */
	enum img_io_kind io_kind;
	uint64_t cache_size;
	char *backing_name; /* as the image names it */
	char *backing_fmt;
	char *backing_path; /* resolved */
	struct img *backing;
	unsigned depth; /* 0 for the top image */
	const struct img_secret *secret; /* passphrase, or NULL (secret.c) */
	pthread_mutex_t lock; /* serialises driver calls unless thread_safe */
	/* Transfers mapped by drv->map_direct running without lock (request.c):
	 * img_direct_drain() waits on direct_idle until none is left. */
	atomic_uint direct_inflight;
	pthread_mutex_t direct_lock;
	pthread_cond_t direct_idle;
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
/* -ENOSYS (or the setup error) when no io_uring ring can be set up here. */
int img_io_uring_open(const char *path, unsigned flags, struct img_io **out);
/* Names starting with "rbd:" (lib/io-rbd.c). */
int img_io_rbd_open(const char *path, unsigned flags, struct img_io **out);
/*
 * Snapshots of an rbd backend, which lib/snapshot.c offers as the snapshots
 * of raw data kept there (QEMU's raw format passes them to its file too).
 * Snapshots are found by id first, then by name; LOAD switches the backend
 * to a read-only view of one. *size: the size afterwards.
 */
bool img_io_is_rbd(const struct img_io *io);
enum img_io_snap_op {
	IMG_IO_SNAP_CREATE,
	IMG_IO_SNAP_APPLY,
	IMG_IO_SNAP_DELETE,
	IMG_IO_SNAP_LOAD,
};
int img_io_rbd_snapshot(struct img_io *io, enum img_io_snap_op op,
			const char *name_or_id, uint64_t *size);
int img_io_rbd_snapshot_list(struct img_io *io, struct img_snapshot_info **out,
			     size_t *n);

#endif
