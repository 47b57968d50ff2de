/* SPDX-License-Identifier: MIT */
/*
 * The FUSE low-level operations of img-fuse. The tree is small and fixed:
 * the root directory holds "disk" (the guest contents as a raw file, through
 * the one open struct img, so every thread shares its cache), "info.json"
 * and "snapshots/" (one read-only file per internal snapshot, each read
 * through its own read-only view opened when the file is opened); with
 * --file the root is the disk itself. Worker threads call the library
 * concurrently; a read-write lock only keeps I/O out of the way of a resize.
 *
 * Mapping: fsync and flush (close) -> img_flush (skipped when nothing was
 * written since the last one); fallocate PUNCH_HOLE -> img_zero with
 * IMG_ZERO_MAY_UNMAP (a hole must read as zeroes, so it is not a discard,
 * whose contents may be the backing file's), ZERO_RANGE -> img_zero, plain
 * allocation -> only the size check; SEEK_DATA/SEEK_HOLE -> img_block_status
 * (ranges that read as zeroes are holes); truncate -> img_resize with
 * --growable, EPERM otherwise. The disk behaves as a block device: O_TRUNC
 * is ignored unless --growable, and writes end at its end (ENOSPC).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "fuse-fs.h"

/* Seconds the kernel may cache the attributes of the fixed nodes. */
#define FS_ATTR_TIMEOUT 1.0

/* An open file: the disk, a snapshot view, or a generated info.json. */
struct fs_handle {
	struct img *img; /* disk or snapshot; NULL for info.json */
	bool own_img; /* a snapshot view, closed on release */
	bool sync; /* O_SYNC / O_DSYNC: writes with IMG_FUA */
	char *data; /* info.json contents */
	size_t len;
};

/* A directory listing built at opendir and served by offset. */
struct fs_dirbuf {
	char *buf;
	size_t len;
	size_t cap;
};

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_handle *fi_handle(struct fuse_file_info *fi)
{
	return (struct fs_handle *)(uintptr_t)fi->fh;
}

static struct timespec ns_to_ts(long long ns)
{
	struct timespec ts = {
		.tv_sec = ns / 1000000000,
		.tv_nsec = ns % 1000000000,
	};
	return ts;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void touch_disk(struct fs *fs)
{
	atomic_store(&fs->mtime_ns, now_ns());
}

static bool is_disk(const struct fs *fs, fuse_ino_t ino)
{
	return fs->file_mode ? ino == FS_INO_ROOT : ino == FS_INO_DISK;
}

/* Preferred I/O size for st_blksize: the cluster, within [4 KiB, 1 MiB]. */
static blksize_t io_block_size(struct img *img)
{
	uint64_t g = img_granularity(img);

	if (g < 4096)
		g = 4096;
	if (g > (1u << 20))
		g = 1u << 20;
	return (blksize_t)g;
}

/* Bytes the image's own files allocate (for st_blocks and statfs). */
static uint64_t allocated_bytes(struct fs *fs)
{
	struct img_info info;

	memset(&info, 0, sizeof(info));
	if (img_info(fs->img, &info) < 0)
		return img_size(fs->img);
	return info.actual_size;
}

static void fill_common(struct fs *fs, struct stat *st, fuse_ino_t ino)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_nlink = 1;
	st->st_blksize = 4096;
	st->st_atim = fs->start_time;
	st->st_mtim = fs->start_time;
	st->st_ctim = fs->start_time;
}

static void disk_attr(struct fs *fs, struct stat *st, fuse_ino_t ino)
{
	uint64_t alloc = allocated_bytes(fs), size;

	fill_common(fs, st, ino);
	pthread_rwlock_rdlock(&fs->size_lock);
	size = img_size(fs->img);
	pthread_rwlock_unlock(&fs->size_lock);
	st->st_mode = S_IFREG | (fs->read_only ? 0444 : 0644);
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((alloc < size ? alloc : size) + 511) / 512;
	st->st_blksize = io_block_size(fs->img);
	st->st_mtim = ns_to_ts(atomic_load(&fs->mtime_ns));
	st->st_ctim = st->st_mtim;
}

/*
 * Attributes of ino; *timeout is how long the kernel may keep them. Returns
 * 0 or -errno.
 */
static int node_attr(struct fs *fs, fuse_ino_t ino, struct stat *st,
		     double *timeout)
{
	*timeout = FS_ATTR_TIMEOUT;
	if (is_disk(fs, ino)) {
		disk_attr(fs, st, ino);
		return 0;
	}
	if (fs->file_mode)
		return -ENOENT;
	switch (ino) {
	case FS_INO_ROOT:
		fill_common(fs, st, ino);
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 3;
		return 0;
	case FS_INO_SNAPDIR:
		fill_common(fs, st, ino);
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		*timeout = 0;
		return 0;
	case FS_INO_INFO: {
		char *data;
		size_t len;
		int ret = fs_info_json(fs, &data, &len);

		if (ret < 0)
			return ret;
		free(data);
		fill_common(fs, st, ino);
		st->st_mode = S_IFREG | 0444;
		st->st_size = (off_t)len;
		st->st_blocks = (blkcnt_t)(len + 511) / 512;
		*timeout = 0;
		return 0;
	}
	default: {
		struct fs_snap *s;
		int ret = -ENOENT;

		pthread_mutex_lock(&fs->snap_lock);
		s = fs_snap_by_ino(fs, ino);
		if (s) {
			fill_common(fs, st, ino);
			st->st_mode = S_IFREG | 0444;
			st->st_size = (off_t)s->size;
			st->st_blocks = (blkcnt_t)(s->size + 511) / 512;
			*timeout = 0;
			ret = 0;
		}
		pthread_mutex_unlock(&fs->snap_lock);
		return ret;
	}
	}
}

static void reply_entry(fuse_req_t req, struct fs *fs, fuse_ino_t ino)
{
	struct fuse_entry_param e;
	double timeout;
	int ret;

	memset(&e, 0, sizeof(e));
	ret = node_attr(fs, ino, &e.attr, &timeout);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	e.ino = ino;
	e.attr_timeout = timeout;
	e.entry_timeout = timeout;
	fuse_reply_entry(req, &e);
}

static void fs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Large requests: the kernel then sends up to 1 MiB per read/write. */
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
	/* O_TRUNC arrives with open, where the disk can ignore it. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* The kernel's write-back cache would hold writes that an fsync'd
	 * guest expects in the image; every write comes to us. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct fs_snap *s;
	fuse_ino_t ino = 0;

	if (fs->file_mode) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (parent == FS_INO_ROOT) {
		if (!strcmp(name, "disk"))
			ino = FS_INO_DISK;
		else if (!strcmp(name, "info.json"))
			ino = FS_INO_INFO;
		else if (!strcmp(name, "snapshots"))
			ino = FS_INO_SNAPDIR;
	} else if (parent == FS_INO_SNAPDIR) {
		pthread_mutex_lock(&fs->snap_lock);
		if (fs_snap_refresh(fs) >= 0) {
			s = fs_snap_by_name(fs, name);
			if (s)
				ino = s->ino;
		}
		pthread_mutex_unlock(&fs->snap_lock);
	} else {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (!ino) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry(req, fs, ino);
}

static void fs_op_getattr(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct stat st;
	double timeout;
	int ret = node_attr(fs, ino, &st, &timeout);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, timeout);
}

/* Resize the disk to size (exactly, else rounded up to 512 bytes when the
 * format needs whole sectors). Takes the size lock exclusively. */
static int disk_resize(struct fs *fs, uint64_t size)
{
	uint64_t cur;
	int ret = 0;

	pthread_rwlock_wrlock(&fs->size_lock);
	cur = img_size(fs->img);
	if (size != cur) {
		unsigned flags = size < cur ? IMG_RESIZE_SHRINK : 0;

		ret = img_resize(fs->img, size, flags, IMG_PREALLOC_OFF);
		if (ret == -EINVAL && size % 512 && size > cur)
			ret = img_resize(fs->img, (size + 511) & ~511ull, 0,
					 IMG_PREALLOC_OFF);
		if (ret >= 0) {
			atomic_fetch_add(&fs->write_gen, 1);
			touch_disk(fs);
		}
	}
	pthread_rwlock_unlock(&fs->size_lock);
	return ret;
}

/* Make the disk at least end bytes long (--growable), or fail -ENOSPC. */
static int disk_grow(struct fs *fs, uint64_t end)
{
	if (!fs->growable)
		return -ENOSPC;
	return disk_resize(fs, end);
}

static void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			  int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct stat st;
	double timeout;
	int ret;

	ret = node_attr(fs, ino, &st, &timeout);
	if (ret < 0)
		goto err;
	if (((to_set & FUSE_SET_ATTR_MODE) &&
	     (attr->st_mode & 07777) != (st.st_mode & 07777)) ||
	    ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != st.st_uid) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != st.st_gid)) {
		ret = -EPERM;
		goto err;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (!is_disk(fs, ino)) {
			ret = S_ISDIR(st.st_mode) ? -EISDIR : -EACCES;
			goto err;
		}
		if (fs->read_only) {
			ret = -EROFS;
			goto err;
		}
		if ((uint64_t)attr->st_size != (uint64_t)st.st_size) {
			if (!fs->growable) {
				ret = -EPERM;
				goto err;
			}
			ret = disk_resize(fs, (uint64_t)attr->st_size);
			if (ret < 0)
				goto err;
		}
	}
	if (is_disk(fs, ino) && (to_set & FUSE_SET_ATTR_MTIME_NOW))
		touch_disk(fs);
	else if (is_disk(fs, ino) && (to_set & FUSE_SET_ATTR_MTIME))
		atomic_store(&fs->mtime_ns,
			     (long long)attr->st_mtim.tv_sec * 1000000000 +
				     attr->st_mtim.tv_nsec);
	ret = node_attr(fs, ino, &st, &timeout);
	if (ret < 0)
		goto err;
	fuse_reply_attr(req, &st, timeout);
	return;
err:
	fuse_reply_err(req, -ret);
}

static int dirbuf_add(fuse_req_t req, struct fs_dirbuf *d, const char *name,
		      fuse_ino_t ino, mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t n = fuse_add_direntry(req, NULL, 0, name, NULL, 0);

	if (d->len + n > d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 1024;
		char *b;

		while (cap < d->len + n)
			cap *= 2;
		b = realloc(d->buf, cap);
		if (!b)
			return -ENOMEM;
		d->buf = b;
		d->cap = cap;
	}
	fuse_add_direntry(req, d->buf + d->len, n, name, &st,
			  (off_t)(d->len + n));
	d->len += n;
	return 0;
}

static int build_listing(fuse_req_t req, struct fs *fs, fuse_ino_t ino,
			 struct fs_dirbuf *d)
{
	static const struct {
		const char *name;
		fuse_ino_t dir, ino;
		mode_t mode;
	} fixed[] = {
		{ ".", FS_INO_ROOT, FS_INO_ROOT, S_IFDIR },
		{ "..", FS_INO_ROOT, FS_INO_ROOT, S_IFDIR },
		{ "disk", FS_INO_ROOT, FS_INO_DISK, S_IFREG },
		{ "info.json", FS_INO_ROOT, FS_INO_INFO, S_IFREG },
		{ "snapshots", FS_INO_ROOT, FS_INO_SNAPDIR, S_IFDIR },
		{ ".", FS_INO_SNAPDIR, FS_INO_SNAPDIR, S_IFDIR },
		{ "..", FS_INO_SNAPDIR, FS_INO_ROOT, S_IFDIR },
	};
	int ret = 0;

	for (size_t i = 0; ret >= 0 && i < sizeof(fixed) / sizeof(fixed[0]);
	     i++)
		if (fixed[i].dir == ino)
			ret = dirbuf_add(req, d, fixed[i].name, fixed[i].ino,
					 fixed[i].mode);
	if (ret < 0 || ino == FS_INO_ROOT)
		return ret;
	pthread_mutex_lock(&fs->snap_lock);
	ret = fs_snap_refresh(fs);
	for (size_t i = 0; ret >= 0 && i < fs->n_snaps; i++) {
		const struct fs_snap *s = &fs->snaps[i];

		if (s->present)
			ret = dirbuf_add(req, d, s->name, s->ino, S_IFREG);
	}
	pthread_mutex_unlock(&fs->snap_lock);
	return ret;
}

static void fs_op_opendir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_dirbuf *d;
	int ret;

	if (fs->file_mode || (ino != FS_INO_ROOT && ino != FS_INO_SNAPDIR)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = build_listing(req, fs, ino, d);
	if (ret < 0) {
		free(d->buf);
		free(d);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0) {
		free(d->buf);
		free(d);
	}
}

static void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	struct fs_dirbuf *d = (struct fs_dirbuf *)(uintptr_t)fi->fh;

	if (off < 0 || (uint64_t)off >= d->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* The kernel stops at an entry cut by size and asks again from the
	 * offset of the last whole one. */
	fuse_reply_buf(req, d->buf + off,
		       d->len - (size_t)off < size ? d->len - (size_t)off :
						     size);
}

static void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino,
			     struct fuse_file_info *fi)
{
	struct fs_dirbuf *d = (struct fs_dirbuf *)(uintptr_t)fi->fh;

	free(d->buf);
	free(d);
	fuse_reply_err(req, 0);
}

/*
 * Reply to the open of the disk. An O_DIRECT open also gets
 * FOPEN_PARALLEL_DIRECT_WRITES, so the kernel sends the writes of several
 * threads concurrently instead of one at a time under the inode lock (they
 * are O_DIRECT writes: no ordering between them is promised). libfuse 3.14's
 * fuse_file_info has no bit for it, so the reply is built here; it is the
 * same fuse_open_out that fuse_reply_open sends.
 */
static int reply_open_disk(fuse_req_t req, struct fuse_file_info *fi)
{
	struct fuse_open_out out = {
		.fh = fi->fh,
		.open_flags = FOPEN_KEEP_CACHE,
	};
	struct iovec iov = { .iov_base = &out, .iov_len = sizeof(out) };

	if (!fi->direct_io)
		return fuse_reply_open(req, fi);
	out.open_flags |= FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	return fuse_reply_iov(req, &iov, 1);
}

static void fs_op_open(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct fs_handle *h;
	struct fs_snap *s;
	int ret = 0;

	h = calloc(1, sizeof(*h));
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (is_disk(fs, ino)) {
		if (writing && fs->read_only) {
			ret = -EROFS;
			goto err;
		}
		if ((fi->flags & O_TRUNC) && writing && fs->growable) {
			ret = disk_resize(fs, 0);
			if (ret < 0)
				goto err;
		}
		h->img = fs->img;
		h->sync = fs->writethrough || (fi->flags & (O_SYNC | O_DSYNC));
		/* Only this mount changes the image: cached pages stay
		 * valid across opens. O_DIRECT opens bypass the page cache
		 * altogether (no invalidation of cached pages per write). */
		fi->keep_cache = 1;
		fi->direct_io = (fi->flags & O_DIRECT) != 0;
	} else if (fs->file_mode) {
		ret = -ENOENT;
		goto err;
	} else if (ino == FS_INO_ROOT || ino == FS_INO_SNAPDIR) {
		ret = -EISDIR;
		goto err;
	} else if (writing) {
		ret = ino == FS_INO_INFO ? -EACCES : -EROFS;
		goto err;
	} else if (ino == FS_INO_INFO) {
		ret = fs_info_json(fs, &h->data, &h->len);
		if (ret < 0)
			goto err;
		/* Its size may change between stat and read. */
		fi->direct_io = 1;
	} else {
		pthread_mutex_lock(&fs->snap_lock);
		s = fs_snap_by_ino(fs, ino);
		ret = s ? fs_snap_open(fs, s, &h->img) : -ENOENT;
		pthread_mutex_unlock(&fs->snap_lock);
		if (ret < 0)
			goto err;
		h->own_img = true;
		/* A snapshot's contents never change while it exists, and
		 * a new snapshot gets a new inode. */
		fi->keep_cache = 1;
	}
	fi->fh = (uintptr_t)h;
	if ((h->img == fs->img ? reply_open_disk(req, fi) :
				 fuse_reply_open(req, fi)) != 0) {
		if (h->own_img)
			img_close(h->img);
		free(h->data);
		free(h);
	}
	return;
err:
	free(h);
	fuse_reply_err(req, -ret);
}

static void fs_op_release(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs_handle *h = fi_handle(fi);

	if (h->own_img)
		img_close(h->img);
	free(h->data);
	free(h);
	fuse_reply_err(req, 0);
}

static void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_handle *h = fi_handle(fi);
	uint64_t end;
	void *buf;
	int ret;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (h->data) {
		if ((uint64_t)off >= h->len)
			size = 0;
		else if (size > h->len - (uint64_t)off)
			size = h->len - (uint64_t)off;
		/* A copy: the kernel may send RELEASE, which frees h->data,
		 * as soon as it has the reply, before fuse_reply_buf returns. */
		buf = malloc(size ? size : 1);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		memcpy(buf, (const char *)h->data + off, size);
		fuse_reply_buf(req, buf, size);
		free(buf);
		return;
	}
	pthread_rwlock_rdlock(&fs->size_lock);
	end = img_size(h->img);
	if ((uint64_t)off >= end)
		size = 0;
	else if (size > end - (uint64_t)off)
		size = (size_t)(end - (uint64_t)off);
	buf = size ? malloc(size) : NULL;
	if (size && !buf)
		ret = -ENOMEM;
	else
		ret = img_read(h->img, buf, (uint64_t)off, size);
	pthread_rwlock_unlock(&fs->size_lock);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, size);
	free(buf);
}

static void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
			size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_handle *h = fi_handle(fi);
	uint64_t end;
	int ret;

	if (off < 0 || (uint64_t)off > UINT64_MAX - size) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!size) {
		fuse_reply_write(req, 0);
		return;
	}
	for (;;) {
		pthread_rwlock_rdlock(&fs->size_lock);
		end = img_size(fs->img);
		if ((uint64_t)off + size <= end || !fs->growable)
			break;
		pthread_rwlock_unlock(&fs->size_lock);
		ret = disk_grow(fs, (uint64_t)off + size);
		if (ret < 0)
			goto err;
	}
	if ((uint64_t)off >= end) {
		ret = -ENOSPC;
		goto unlock;
	}
	/* A write across the end of a fixed-size disk is cut short. */
	if (size > end - (uint64_t)off)
		size = (size_t)(end - (uint64_t)off);
	ret = img_write(fs->img, buf, (uint64_t)off, size,
			h->sync ? IMG_FUA : 0);
	if (ret >= 0) {
		atomic_fetch_add(&fs->write_gen, 1);
		touch_disk(fs);
	}
unlock:
	pthread_rwlock_unlock(&fs->size_lock);
	if (ret >= 0) {
		fuse_reply_write(req, size);
		return;
	}
err:
	fuse_reply_err(req, -ret);
}

int fs_flush(struct fs *fs)
{
	unsigned long long gen = atomic_load(&fs->write_gen);
	int ret = 0;

	if (gen == atomic_load(&fs->flushed_gen))
		return 0;
	pthread_mutex_lock(&fs->flush_lock);
	/* Everything counted in gen had completed before this read, so a
	 * flush that starts now covers it. */
	gen = atomic_load(&fs->write_gen);
	if (gen != atomic_load(&fs->flushed_gen)) {
		ret = img_flush(fs->img);
		if (ret >= 0)
			atomic_store(&fs->flushed_gen, gen);
	}
	pthread_mutex_unlock(&fs->flush_lock);
	return ret;
}

static void fs_op_flush(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);

	fuse_reply_err(req, is_disk(fs, ino) ? -fs_flush(fs) : 0);
}

static void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	fs_op_flush(req, ino, fi);
}

static void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			    off_t len, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	uint64_t end, size;
	int ret = 0;

	if (!is_disk(fs, ino)) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
		     FALLOC_FL_ZERO_RANGE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (off < 0 || len <= 0 || (uint64_t)off > UINT64_MAX - (uint64_t)len) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	end = (uint64_t)off + (uint64_t)len;
	for (;;) {
		pthread_rwlock_rdlock(&fs->size_lock);
		size = img_size(fs->img);
		if (end <= size || (mode & FALLOC_FL_KEEP_SIZE))
			break;
		pthread_rwlock_unlock(&fs->size_lock);
		ret = disk_grow(fs, end);
		if (ret < 0)
			goto err;
	}
	if (end > size)
		end = size;
	/* Plain allocation: the range exists now; img does not reserve
	 * host space ahead of writes. */
	if ((uint64_t)off < end && (mode & FALLOC_FL_PUNCH_HOLE))
		ret = img_zero(fs->img, (uint64_t)off, end - (uint64_t)off,
			       IMG_ZERO_MAY_UNMAP);
	else if ((uint64_t)off < end && (mode & FALLOC_FL_ZERO_RANGE))
		ret = img_zero(fs->img, (uint64_t)off, end - (uint64_t)off, 0);
	if (ret >= 0 &&
	    (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
		atomic_fetch_add(&fs->write_gen, 1);
		touch_disk(fs);
	}
	pthread_rwlock_unlock(&fs->size_lock);
	if (ret >= 0) {
		fuse_reply_err(req, 0);
		return;
	}
err:
	fuse_reply_err(req, -ret);
}

/*
 * SEEK_DATA / SEEK_HOLE on img from off: ranges that read as zeroes
 * (unallocated down the chain, or zero clusters) are holes.
 */
static int seek_img(struct img *img, uint64_t off, int whence, uint64_t *out)
{
	uint64_t size = img_size(img);
	struct img_extent ext;
	int ret;

	if (off >= size)
		return -ENXIO;
	while (off < size) {
		bool hole;

		ret = img_block_status(img, off, size - off, 0, &ext);
		if (ret < 0)
			return ret;
		hole = (ext.flags & IMG_EXT_ZERO) != 0;
		if (hole == (whence == SEEK_HOLE)) {
			*out = off;
			return 0;
		}
		off += ext.len;
	}
	if (whence == SEEK_DATA)
		return -ENXIO;
	*out = size; /* the implicit hole at the end of the file */
	return 0;
}

static void fs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
			struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_handle *h = fi_handle(fi);
	uint64_t pos;
	int ret;

	if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (h->data) {
		if ((uint64_t)off >= h->len)
			fuse_reply_err(req, ENXIO);
		else
			fuse_reply_lseek(
				req, whence == SEEK_DATA ? off : (off_t)h->len);
		return;
	}
	pthread_rwlock_rdlock(&fs->size_lock);
	ret = seek_img(h->img, (uint64_t)off, whence, &pos);
	pthread_rwlock_unlock(&fs->size_lock);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_lseek(req, (off_t)pos);
}

static void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = req_fs(req);
	const uint64_t bsize = 4096;
	struct statvfs host, st;
	uint64_t blocks, used, avail;

	memset(&st, 0, sizeof(st));
	pthread_rwlock_rdlock(&fs->size_lock);
	blocks = (img_size(fs->img) + bsize - 1) / bsize;
	pthread_rwlock_unlock(&fs->size_lock);
	used = (allocated_bytes(fs) + bsize - 1) / bsize;
	if (used > blocks)
		used = blocks;
	/* What is left of the disk, as far as the host file system can
	 * hold it. */
	avail = blocks - used;
	if (!fs->read_only && statvfs(fs->image_path, &host) == 0 &&
	    (uint64_t)host.f_bavail * host.f_frsize / bsize < avail)
		avail = (uint64_t)host.f_bavail * host.f_frsize / bsize;
	if (fs->read_only)
		avail = 0;
	st.f_bsize = bsize;
	st.f_frsize = bsize;
	st.f_blocks = blocks;
	st.f_bfree = avail;
	st.f_bavail = avail;
	pthread_mutex_lock(&fs->snap_lock);
	st.f_files = fs->file_mode ? 1 : 4 + fs->n_snaps;
	pthread_mutex_unlock(&fs->snap_lock);
	st.f_ffree = 0;
	st.f_favail = 0;
	st.f_namemax = NAME_MAX;
	fuse_reply_statfs(req, &st);
}

static void fs_op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd,
			void *arg, struct fuse_file_info *fi, unsigned flags,
			const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	uint32_t pid = (uint32_t)getpid();

	if (cmd != IMG_FUSE_IOC_PID || out_bufsz < sizeof(pid)) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	fuse_reply_ioctl(req, 0, &pid, sizeof(pid));
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_op_init,
	.lookup = fs_op_lookup,
	.getattr = fs_op_getattr,
	.setattr = fs_op_setattr,
	.opendir = fs_op_opendir,
	.readdir = fs_op_readdir,
	.releasedir = fs_op_releasedir,
	.open = fs_op_open,
	.release = fs_op_release,
	.read = fs_op_read,
	.write = fs_op_write,
	.flush = fs_op_flush,
	.fsync = fs_op_fsync,
	.fallocate = fs_op_fallocate,
	.lseek = fs_op_lseek,
	.statfs = fs_op_statfs,
	.ioctl = fs_op_ioctl,
};

void fs_init_state(struct fs *fs)
{
	memset(fs, 0, sizeof(*fs));
	pthread_rwlock_init(&fs->size_lock, NULL);
	pthread_mutex_init(&fs->flush_lock, NULL);
	pthread_mutex_init(&fs->snap_lock, NULL);
	clock_gettime(CLOCK_REALTIME, &fs->start_time);
	atomic_init(&fs->mtime_ns, now_ns());
	atomic_init(&fs->write_gen, 0);
	atomic_init(&fs->flushed_gen, 0);
	fs->next_ino = FS_INO_FIRST_SNAP;
	fs->uid = getuid();
	fs->gid = getgid();
}

void fs_release_state(struct fs *fs)
{
	fs_snap_free_all(fs);
	free(fs->image_path);
	free(fs->img_tool);
	pthread_rwlock_destroy(&fs->size_lock);
	pthread_mutex_destroy(&fs->flush_lock);
	pthread_mutex_destroy(&fs->snap_lock);
}
