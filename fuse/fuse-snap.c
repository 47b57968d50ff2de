/* SPDX-License-Identifier: MIT */
/*
 * The snapshots/ directory of an img-fuse mount. Snapshots are made and
 * deleted by other processes (img snapshot), so every lookup and listing
 * re-reads the snapshot table through a fresh read-only open of the image,
 * and each opened snapshot file reads through its own read-only view of that
 * snapshot. A snapshot keeps its inode number for the life of the mount and
 * a new snapshot (even one reusing a deleted one's name or id) gets a new
 * one, so the kernel never serves one snapshot's cached pages for another.
 * Snapshots whose name cannot be a file name ("", ".", "..", a '/' inside)
 * appear under their id; a name listed twice appears once.
 */
#include <stdlib.h>
#include <string.h>

#include "fuse-fs.h"

/* The file name snapshot si appears under, or NULL if it cannot appear. */
static const char *file_name(const struct img_snapshot_info *si)
{
	const char *n = si->name;

	if (!n[0] || !strcmp(n, ".") || !strcmp(n, "..") || strchr(n, '/'))
		n = si->id;
	if (!n[0] || !strcmp(n, ".") || !strcmp(n, "..") || strchr(n, '/'))
		return NULL;
	return n;
}

/* The entry of a previous listing that is the same snapshot as si. */
static struct fs_snap *
find_same(struct fs *fs, const struct img_snapshot_info *si, const char *name)
{
	for (size_t i = 0; i < fs->n_snaps; i++) {
		struct fs_snap *s = &fs->snaps[i];

		if (!strcmp(s->id, si->id) && !strcmp(s->name, name) &&
		    s->date_sec == si->date_sec &&
		    s->date_nsec == si->date_nsec)
			return s;
	}
	return NULL;
}

static int add_entry(struct fs *fs, const struct img_snapshot_info *si,
		     const char *name)
{
	struct fs_snap *snaps, *s;

	snaps = realloc(fs->snaps, (fs->n_snaps + 1) * sizeof(*snaps));
	if (!snaps)
		return -ENOMEM;
	fs->snaps = snaps;
	s = &snaps[fs->n_snaps];
	memset(s, 0, sizeof(*s));
	s->id = strdup(si->id);
	s->name = strdup(name);
	if (!s->id || !s->name) {
		free(s->id);
		free(s->name);
		return -ENOMEM;
	}
	s->ino = fs->next_ino++;
	s->size = si->disk_size;
	s->date_sec = si->date_sec;
	s->date_nsec = si->date_nsec;
	s->present = true;
	fs->n_snaps++;
	return 0;
}

int fs_snap_refresh(struct fs *fs)
{
	struct img_open_opts o = fs->open_opts;
	struct img_snapshot_info *list = NULL;
	struct img *view;
	size_t n = 0;
	int ret;

	/* Shared: the mount's own opening holds the image lock. */
	o.flags |= IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING | IMG_OPEN_NO_IO |
		   IMG_OPEN_SHARED;
	o.snapshot = NULL;
	ret = img_open(fs->image_path, &o, &view);
	if (ret < 0)
		return ret;
	ret = img_snapshot_list(view, &list, &n);
	img_close(view);
	if (ret == -ENOTSUP) {
		ret = 0;
		n = 0;
	}
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < fs->n_snaps; i++)
		fs->snaps[i].present = false;
	for (size_t i = 0; i < n && ret >= 0; i++) {
		const char *name = file_name(&list[i]);
		struct fs_snap *s;

		if (!name || fs_snap_by_name(fs, name))
			continue;
		s = find_same(fs, &list[i], name);
		if (s)
			s->present = true;
		else
			ret = add_entry(fs, &list[i], name);
	}
	img_snapshot_list_free(list, n);
	return ret;
}

struct fs_snap *fs_snap_by_ino(struct fs *fs, fuse_ino_t ino)
{
	for (size_t i = 0; i < fs->n_snaps; i++)
		if (fs->snaps[i].ino == ino && fs->snaps[i].present)
			return &fs->snaps[i];
	return NULL;
}

struct fs_snap *fs_snap_by_name(struct fs *fs, const char *name)
{
	for (size_t i = 0; i < fs->n_snaps; i++)
		if (fs->snaps[i].present && !strcmp(fs->snaps[i].name, name))
			return &fs->snaps[i];
	return NULL;
}

int fs_snap_open(struct fs *fs, const struct fs_snap *s, struct img **out)
{
	struct img_open_opts o = fs->open_opts;

	o.flags |= IMG_OPEN_RDONLY | IMG_OPEN_SHARED;
	o.snapshot = s->id;
	return img_open(fs->image_path, &o, out);
}

void fs_snap_free_all(struct fs *fs)
{
	for (size_t i = 0; i < fs->n_snaps; i++) {
		free(fs->snaps[i].id);
		free(fs->snaps[i].name);
	}
	free(fs->snaps);
	fs->snaps = NULL;
	fs->n_snaps = 0;
}
