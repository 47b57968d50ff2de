/* SPDX-License-Identifier: MIT */
/*
 * img-fuse internals shared by its files: the state of one mount (the open
 * image, the options it was mounted with, the inode table of internal
 * snapshots) and the entry points that fuse-main.c calls: the low-level FUSE
 * operations (fuse-ops.c), the snapshot directory (fuse-snap.c) and the
 * info.json generator (fuse-info.c).
 */
#ifndef IMG_FUSE_FS_H
#define IMG_FUSE_FS_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/types.h>

#include "img.h"

/* Fixed inode numbers; snapshot files are numbered from FS_INO_FIRST_SNAP. */
enum {
	FS_INO_ROOT = FUSE_ROOT_ID, /* the directory, or the disk with --file */
	FS_INO_DISK,
	FS_INO_INFO,
	FS_INO_SNAPDIR,
	FS_INO_FIRST_SNAP,
};

/*
 * ioctl on the disk file (or the --file root) that returns the daemon's pid
 * as a uint32_t, so that `img umount` can wait for the image to be closed.
 * tools/img/cmd-mount.c has its own copy of this number.
 */
#define IMG_FUSE_IOC_PID _IOR('i', 0x70, uint32_t)

/* One internal snapshot seen by a listing; its inode is never reused. */
struct fs_snap {
	fuse_ino_t ino;
	char *id;
	char *name;
	uint64_t size;
	uint64_t date_sec; /* with id and name: tells a new snapshot apart */
	uint32_t date_nsec;
	bool present; /* in the latest listing */
};

struct fs {
	struct img *img;
	char *image_path; /* absolute, for reopening views of it */
	struct img_open_opts open_opts; /* how img was opened (format fixed) */
	char *img_tool; /* the img binary that writes info.json */
	bool file_mode; /* --file: the mount root is the disk itself */
	bool read_only;
	bool growable;
	bool writethrough; /* every write with IMG_FUA */
	uid_t uid;
	gid_t gid;
	struct timespec start_time;
	atomic_llong mtime_ns; /* of the disk: last write or resize */
	/* I/O holds it shared; a resize holds it exclusively. */
	pthread_rwlock_t size_lock;
	/* Writes since the last flush: flushes skip when nothing changed. */
	atomic_ullong write_gen;
	atomic_ullong flushed_gen;
	pthread_mutex_t flush_lock;
	/* Snapshot table, rebuilt by fs_snap_refresh(). */
	pthread_mutex_t snap_lock;
	struct fs_snap *snaps;
	size_t n_snaps;
	fuse_ino_t next_ino;
};

/* The low-level operations; userdata is the struct fs. */
extern const struct fuse_lowlevel_ops fs_ops;

void fs_init_state(struct fs *fs);
void fs_release_state(struct fs *fs);

/* Flush the image if anything was written since the last flush. */
int fs_flush(struct fs *fs);

/*
 * Re-read the image's snapshot table from disk (after flushing the mount's
 * own writes) and update fs->snaps. Call with fs->snap_lock held.
 */
int fs_snap_refresh(struct fs *fs);
/* The entry for ino or name (NULL if none or not present); snap_lock held. */
struct fs_snap *fs_snap_by_ino(struct fs *fs, fuse_ino_t ino);
struct fs_snap *fs_snap_by_name(struct fs *fs, const char *name);
/* Open a read-only view of snapshot s. */
int fs_snap_open(struct fs *fs, const struct fs_snap *s, struct img **out);
void fs_snap_free_all(struct fs *fs);

/*
 * What `img info --output=json --backing-chain` prints for the image, in a
 * malloc'd buffer (*out, *len), after flushing the mount's writes.
 */
int fs_info_json(struct fs *fs, char **out, size_t *len);

#endif
