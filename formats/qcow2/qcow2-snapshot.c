/* SPDX-License-Identifier: MIT */
/*
 * qcow2 internal snapshots: the snapshot table (spec "Snapshots": 40-byte
 * entry headers, extra data, id and name, each entry 8-byte aligned) decoded
 * and validated, and the operations on it: list, create, apply (goto),
 * delete, and the read-only view of one snapshot (img_open_opts.snapshot).
 *
 * Refcounts follow QEMU: a cluster's refcount counts every L1 table (the
 * active one and each snapshot's) through which it is reached, so a
 * snapshot raises the refcount of each L2 table its L1 names and of each
 * cluster those tables map (VM state clusters, which live past the disk size
 * in the snapshot's L1, included). Writes copy shared clusters and L2 tables
 * (no COPIED flag) before changing them (qcow2-cluster.c).
 *
 * Crash-consistency ordering (a crash leaves at worst leaked clusters, or a
 * COPIED flag cleared on a cluster whose refcount is still 1, which `check
 * -r all` repairs; never a shared cluster that the active state may write in
 * place, never a table naming a freed cluster):
 *  create: snapshot L1 copy written; refcounts raised and written; COPIED
 *          flags cleared in the active L2 tables and L1, written and flushed;
 *          new table written and flushed; header (nb_snapshots and
 *          snapshots_offset, one 12-byte write) flushed; old table freed.
 *  delete: new table, header switch, flush; then the snapshot's references
 *          dropped (refcounts written), then COPIED flags recomputed in the
 *          active tables; the snapshot's L1 freed.
 *  apply:  refcounts of everything the snapshot references raised and
 *          written; a new active L1 (the snapshot's, COPIED recomputed)
 *          written at a fresh place and flushed; header (size, l1_size,
 *          l1_table_offset: one 24-byte write) flushed; the old active L1's
 *          references dropped and its clusters freed; COPIED recomputed.
 * Unknown extra data bytes of an entry are preserved; an entry with less
 * extra data than QEMU writes gets the full 24 bytes when the table is
 * rewritten (disk size defaulting to the current size, as QEMU does).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qcow2.h"

/* Offsets in a snapshot table entry header (spec field names). */
enum {
	SN_L1_TABLE_OFFSET = 0,
	SN_L1_SIZE = 8,
	SN_ID_STR_SIZE = 12,
	SN_NAME_SIZE = 14,
	SN_DATE_SEC = 16,
	SN_DATE_NSEC = 20,
	SN_VM_CLOCK_NSEC = 24,
	SN_VM_STATE_SIZE = 32,
	SN_EXTRA_DATA_SIZE = 36,
	SN_HEADER_SIZE = 40,
};
/* Extra data fields (v3 requires the first two). */
enum {
	SNX_VM_STATE_SIZE_LARGE = 0,
	SNX_DISK_SIZE = 8,
	SNX_ICOUNT = 16,
	SNX_SIZE = 24, /* what QEMU 7.2 writes */
};

/* QEMU's limits. */
#define MAX_SNAPSHOTS 65536
#define MAX_EXTRA_DATA 1024
#define MAX_TABLE_BYTES (1024ull * MAX_SNAPSHOTS)

struct qcow2_snapshot {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	char *id;
	char *name;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t vm_state_size;
	uint64_t disk_size;
	uint64_t icount; /* UINT64_MAX if absent */
	uint32_t extra_size; /* extra data bytes as read */
	uint8_t *unknown_extra; /* extra data past SNX_SIZE, preserved */
	uint32_t unknown_extra_len;
};

struct sn_table {
	struct qcow2_snapshot *sn;
	uint32_t n;
	uint64_t file_off; /* where it is on disk (0: none) */
	uint64_t size; /* bytes on disk */
};

static void table_release(struct sn_table *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		free(t->sn[i].id);
		free(t->sn[i].name);
		free(t->sn[i].unknown_extra);
	}
	free(t->sn);
	memset(t, 0, sizeof(*t));
}

static int oom(void)
{
	return img_error(-ENOMEM, "qcow2: out of memory");
}

static int read_string(struct qcow2 *s, uint64_t off, uint16_t len, char **out)
{
	char *p = malloc((size_t)len + 1);
	int ret;

	if (!p)
		return oom();
	ret = len ? img_io_pread(s->file, p, len, off) : 0;
	if (ret < 0) {
		free(p);
		return ret;
	}
	p[len] = 0;
	if (memchr(p, 0, len)) {
		free(p);
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot id or name at %#" PRIx64
				 " contains a NUL byte",
				 off);
	}
	*out = p;
	return 0;
}

/* Decode one entry at off; *next is past its name (before alignment). */
static int read_entry(struct qcow2 *s, uint64_t off, uint64_t end,
		      struct qcow2_snapshot *sn, uint64_t *next)
{
	uint8_t h[SN_HEADER_SIZE], x[MAX_EXTRA_DATA];
	uint32_t extra;
	uint16_t id_len, name_len;
	int ret;

	if (end - off < SN_HEADER_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot table entry at %#" PRIx64
				 " runs past the end of the table",
				 off);
	ret = img_io_pread(s->file, h, sizeof(h), off);
	if (ret < 0)
		return ret;
	sn->l1_table_offset = img_be64(h + SN_L1_TABLE_OFFSET);
	sn->l1_size = img_be32(h + SN_L1_SIZE);
	id_len = img_be16(h + SN_ID_STR_SIZE);
	name_len = img_be16(h + SN_NAME_SIZE);
	sn->date_sec = img_be32(h + SN_DATE_SEC);
	sn->date_nsec = img_be32(h + SN_DATE_NSEC);
	sn->vm_clock_nsec = img_be64(h + SN_VM_CLOCK_NSEC);
	sn->vm_state_size = img_be32(h + SN_VM_STATE_SIZE);
	extra = img_be32(h + SN_EXTRA_DATA_SIZE);
	sn->extra_size = extra;
	sn->disk_size = s->h.size;
	sn->icount = UINT64_MAX;
	off += SN_HEADER_SIZE;
	if (extra > MAX_EXTRA_DATA)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot extra data of %" PRIu32
				 " bytes is too large (at most %d)",
				 extra, MAX_EXTRA_DATA);
	if (end - off < (uint64_t)extra + id_len + name_len)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot table entry at %#" PRIx64
				 " runs past the end of the table",
				 off - SN_HEADER_SIZE);
	if (extra) {
		ret = img_io_pread(s->file, x, extra, off);
		if (ret < 0)
			return ret;
	}
	if (extra >= SNX_VM_STATE_SIZE_LARGE + 8)
		sn->vm_state_size = img_be64(x + SNX_VM_STATE_SIZE_LARGE);
	if (extra >= SNX_DISK_SIZE + 8)
		sn->disk_size = img_be64(x + SNX_DISK_SIZE);
	if (extra >= SNX_ICOUNT + 8)
		sn->icount = img_be64(x + SNX_ICOUNT);
	if (extra > SNX_SIZE) {
		sn->unknown_extra_len = extra - SNX_SIZE;
		sn->unknown_extra = malloc(sn->unknown_extra_len);
		if (!sn->unknown_extra)
			return oom();
		memcpy(sn->unknown_extra, x + SNX_SIZE, sn->unknown_extra_len);
	}
	if (sn->disk_size > QCOW2_MAX_VIRTUAL_SIZE)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot disk size %" PRIu64
				 " is too large",
				 sn->disk_size);
	off += extra;
	ret = read_string(s, off, id_len, &sn->id);
	if (ret < 0)
		return ret;
	off += id_len;
	ret = read_string(s, off, name_len, &sn->name);
	if (ret < 0)
		return ret;
	*next = off + name_len;
	return 0;
}

/* Read and validate the snapshot table the header names. */
static int table_read(struct qcow2 *s, struct sn_table *t)
{
	uint64_t base = s->h.snapshots_offset, off, file_size, end;
	int ret;

	memset(t, 0, sizeof(*t));
	if (!s->h.nb_snapshots)
		return 0;
	if (s->h.nb_snapshots > MAX_SNAPSHOTS)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: %" PRIu32 " snapshots is too many",
				 s->h.nb_snapshots);
	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		return ret;
	if (!base || base % s->cluster_size || base >= file_size)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot table offset %#" PRIx64
				 " is invalid",
				 base);
	/* Each entry takes at least 40 bytes of the table. */
	ret = img_metadata_check(s->img, (uint64_t)s->h.nb_snapshots * 40,
				 "a snapshot table");
	if (ret < 0)
		return ret;
	end = base + img_min(MAX_TABLE_BYTES, file_size - base);
	t->sn = calloc(s->h.nb_snapshots, sizeof(*t->sn));
	if (!t->sn)
		return oom();
	t->file_off = base;
	off = base;
	for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
		off = img_align_up(off, 8);
		if (off > end) {
			ret = img_error(-IMG_ECORRUPT,
					"qcow2: snapshot table is too large");
			goto fail;
		}
		t->n = i + 1;
		ret = read_entry(s, off, end, &t->sn[i], &off);
		if (ret < 0)
			goto fail;
	}
	t->size = off - base;
	return 0;
fail:
	table_release(t);
	return ret;
}

/* Find by id first, then by name (as QEMU does); -1 if none. */
static int64_t table_find(const struct sn_table *t, const char *id_or_name)
{
	for (uint32_t i = 0; i < t->n; i++)
		if (!strcmp(t->sn[i].id, id_or_name))
			return i;
	for (uint32_t i = 0; i < t->n; i++)
		if (!strcmp(t->sn[i].name, id_or_name))
			return i;
	return -1;
}

static int not_found(const char *id_or_name)
{
	return img_error(-ENOENT, "qcow2: snapshot '%s' not found", id_or_name);
}

/* Read the table and find name_or_id in it (*t released on failure). */
static int table_lookup(struct qcow2 *s, const char *name_or_id,
			struct sn_table *t, int64_t *idx)
{
	int ret = table_read(s, t);

	if (ret < 0)
		return ret;
	*idx = table_find(t, name_or_id);
	if (*idx < 0) {
		table_release(t);
		return not_found(name_or_id);
	}
	return 0;
}

static uint64_t l1_entries_for(const struct qcow2 *s, uint64_t size)
{
	unsigned bits = s->cluster_bits + s->l2_bits;

	return (size + (1ull << bits) - 1) >> bits;
}

/* Read the L1 table of sn, validated, padded with zeroes to cover its disk
 * size; *n entries in *out (malloc'd, host endian). */
static int read_sn_l1(struct qcow2 *s, const struct qcow2_snapshot *sn,
		      uint64_t **out, uint32_t *n)
{
	uint64_t bytes = (uint64_t)sn->l1_size * 8, file_size;
	uint64_t need = l1_entries_for(s, sn->disk_size), cnt;
	uint8_t *raw = NULL;
	uint64_t *l1;
	int ret;

	if (bytes > QCOW2_MAX_L1_BYTES || need * 8 > QCOW2_MAX_L1_BYTES)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: snapshot '%s' L1 table of %" PRIu32
				 " entries is too large",
				 sn->id, sn->l1_size);
	ret = img_metadata_check(s->img, bytes > need * 8 ? bytes : need * 8,
				 "a snapshot L1 table");
	if (ret < 0)
		return ret;
	ret = img_io_size(s->file, &file_size);
	if (ret < 0)
		return ret;
	if (bytes &&
	    (!sn->l1_table_offset || sn->l1_table_offset % s->cluster_size ||
	     sn->l1_table_offset > file_size ||
	     bytes > file_size - sn->l1_table_offset))
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: snapshot '%s' L1 table offset %#" PRIx64
			" is invalid",
			sn->id, sn->l1_table_offset);
	cnt = need > sn->l1_size ? need : sn->l1_size;
	l1 = calloc(cnt ? cnt : 1, 8);
	if (!l1)
		return oom();
	if (bytes) {
		raw = malloc(bytes);
		if (!raw) {
			free(l1);
			return oom();
		}
		ret = img_io_pread(s->file, raw, bytes, sn->l1_table_offset);
		if (ret < 0) {
			free(raw);
			free(l1);
			return ret;
		}
		for (uint32_t i = 0; i < sn->l1_size; i++)
			l1[i] = img_be64(raw + 8 * i);
		free(raw);
	}
	for (uint64_t i = 0; i < cnt; i++) {
		uint64_t off = l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (off % s->cluster_size || (off && off >= file_size)) {
			free(l1);
			return img_error(
				-IMG_ECORRUPT,
				"qcow2: snapshot '%s' L1 entry %" PRIu64
				" has invalid L2 offset %#" PRIx64,
				sn->id, i, off);
		}
	}
	*out = l1;
	*n = (uint32_t)cnt;
	return 0;
}

/* Host range of a compressed cluster descriptor (spec "Compressed Clusters
 * Descriptor"). */
static void compressed_range(const struct qcow2 *s, uint64_t l2e, uint64_t *off,
			     uint64_t *len)
{
	unsigned x = 62 - (s->cluster_bits - 8);
	uint64_t sectors =
		((l2e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;

	*off = l2e & ((1ull << x) - 1);
	*len = sectors * 512 - (*off & 511);
}

static bool l2e_has_host(const struct qcow2 *s, uint64_t l2e)
{
	return !(l2e & QCOW2_OFLAG_COMPRESSED) && (l2e & QCOW2_L2E_OFFSET_MASK);
}

/*
 * Add delta (+1 or -1) to the refcount of every L2 table l1 names and of
 * every host cluster those tables map (clusters and tables reaching zero are
 * freed); or, with delta 0, set the COPIED flag of each L2 entry and of each
 * l1 entry to (refcount == 1). l1 is changed in memory only, L2 tables
 * through the cache.
 */
static int walk_l1(struct qcow2 *s, uint64_t *l1, uint32_t n, int delta)
{
	bool flags = delta == 0;
	uint64_t cs = s->cluster_size;
	int ret;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK, rc;
		uint8_t *t;
		bool dirty = false;

		if (!l2_off)
			continue;
		ret = img_cache_get(s->l2_cache, l2_off, (void **)&t);
		if (ret < 0)
			return ret;
		for (uint64_t j = 0; j < s->l2_entries; j++) {
			uint8_t *e = t + j * s->l2_entry_size;
			uint64_t l2e = img_be64(e), nl2e, hoff, hlen;

			if (l2e & QCOW2_OFLAG_COMPRESSED) {
				compressed_range(s, l2e, &hoff, &hlen);
				ret = qcow2_refcount_update(s, hoff, hlen,
							    delta);
				if (ret < 0)
					goto put;
				continue;
			}
			if (!l2e_has_host(s, l2e))
				continue;
			hoff = l2e & QCOW2_L2E_OFFSET_MASK;
			if (hoff % cs) {
				ret = qcow2_signal_corruption(
					s,
					"qcow2: L2 entry %#" PRIx64
					" in table %#" PRIx64
					" has an unaligned offset",
					l2e, l2_off);
				goto put;
			}
			ret = qcow2_refcount_update(s, hoff, cs, delta);
			if (ret < 0)
				goto put;
			if (!flags)
				continue;
			ret = qcow2_refcount_get(s, hoff >> s->cluster_bits,
						 &rc);
			if (ret < 0)
				goto put;
			nl2e = rc == 1 ? l2e | QCOW2_OFLAG_COPIED :
					 l2e & ~QCOW2_OFLAG_COPIED;
			if (nl2e != l2e) {
				img_put_be64(e, nl2e);
				dirty = true;
			}
		}
		ret = 0;
put:
		if (dirty)
			img_cache_mark_dirty(s->l2_cache, t);
		img_cache_put(s->l2_cache, t);
		if (ret < 0)
			return ret;
		ret = qcow2_refcount_update(s, l2_off, cs, delta);
		if (ret < 0)
			return ret;
		if (flags) {
			ret = qcow2_refcount_get(s, l2_off >> s->cluster_bits,
						 &rc);
			if (ret < 0)
				return ret;
			l1[i] = rc == 1 ? l1[i] | QCOW2_OFLAG_COPIED :
					  l1[i] & ~QCOW2_OFLAG_COPIED;
		}
	}
	return 0;
}

/* Write back every cached table (refcounts first) and flush the file. */
static int sync_all(struct qcow2 *s)
{
	int ret = qcow2_metadata_write_back(s);

	return ret < 0 ? ret : img_io_flush(s->file);
}

/* Write n L1 entries at file_off (big endian). */
static int write_l1(struct qcow2 *s, uint64_t file_off, const uint64_t *l1,
		    uint32_t n, bool clear_copied)
{
	uint8_t *buf;
	int ret;

	if (!n)
		return 0;
	buf = malloc((size_t)n * 8);
	if (!buf)
		return oom();
	for (uint32_t i = 0; i < n; i++)
		img_put_be64(buf + 8 * i, clear_copied ?
						  l1[i] & ~QCOW2_OFLAG_COPIED :
						  l1[i]);
	ret = img_io_pwrite(s->file, buf, (uint64_t)n * 8, file_off);
	free(buf);
	return ret;
}

static uint64_t entry_size(const struct qcow2_snapshot *sn)
{
	return SN_HEADER_SIZE + SNX_SIZE + sn->unknown_extra_len +
	       strlen(sn->id) + strlen(sn->name);
}

static int table_encode(const struct sn_table *t, uint8_t **out, uint64_t *len)
{
	uint64_t total = 0, off = 0;
	uint8_t *buf;

	for (uint32_t i = 0; i < t->n; i++)
		total = img_align_up(total, 8) + entry_size(&t->sn[i]);
	if (total > MAX_TABLE_BYTES)
		return img_error(-EFBIG,
				 "qcow2: snapshot table of %" PRIu64
				 " bytes would be too large",
				 total);
	buf = calloc(1, total ? total : 1);
	if (!buf)
		return oom();
	for (uint32_t i = 0; i < t->n; i++) {
		const struct qcow2_snapshot *sn = &t->sn[i];
		size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
		uint8_t *h;

		off = img_align_up(off, 8);
		h = buf + off;
		img_put_be64(h + SN_L1_TABLE_OFFSET, sn->l1_table_offset);
		img_put_be32(h + SN_L1_SIZE, sn->l1_size);
		img_put_be16(h + SN_ID_STR_SIZE, (uint16_t)id_len);
		img_put_be16(h + SN_NAME_SIZE, (uint16_t)name_len);
		img_put_be32(h + SN_DATE_SEC, sn->date_sec);
		img_put_be32(h + SN_DATE_NSEC, sn->date_nsec);
		img_put_be64(h + SN_VM_CLOCK_NSEC, sn->vm_clock_nsec);
		/* Older readers must see a disk-only snapshot rather than a
		 * truncated VM state size. */
		img_put_be32(h + SN_VM_STATE_SIZE,
			     sn->vm_state_size <= UINT32_MAX ?
				     (uint32_t)sn->vm_state_size :
				     0);
		img_put_be32(h + SN_EXTRA_DATA_SIZE,
			     SNX_SIZE + sn->unknown_extra_len);
		h += SN_HEADER_SIZE;
		img_put_be64(h + SNX_VM_STATE_SIZE_LARGE, sn->vm_state_size);
		img_put_be64(h + SNX_DISK_SIZE, sn->disk_size);
		img_put_be64(h + SNX_ICOUNT, sn->icount);
		h += SNX_SIZE;
		if (sn->unknown_extra_len)
			memcpy(h, sn->unknown_extra, sn->unknown_extra_len);
		h += sn->unknown_extra_len;
		memcpy(h, sn->id, id_len);
		memcpy(h + id_len, sn->name, name_len);
		off += entry_size(sn);
	}
	*out = buf;
	*len = total;
	return 0;
}

/*
 * Write t's entries as the new snapshot table: to fresh clusters, flushed,
 * then the header switched (one write, flushed), then the old table freed.
 */
static int table_write(struct qcow2 *s, struct sn_table *t)
{
	uint64_t len = 0, new_off = 0, old_off = t->file_off,
		 old_size = t->size;
	uint8_t *buf = NULL, hdr[12];
	int ret;

	ret = table_encode(t, &buf, &len);
	if (ret < 0)
		return ret;
	if (t->n) {
		ret = qcow2_alloc_clusters(s,
					   img_align_up(len, s->cluster_size) >>
						   s->cluster_bits,
					   &new_off);
		if (ret == 0)
			ret = img_io_pwrite(s->file, buf, len, new_off);
	}
	free(buf);
	if (ret == 0)
		ret = sync_all(s);
	if (ret < 0)
		return ret;
	img_put_be32(hdr, t->n);
	img_put_be64(hdr + 4, new_off);
	ret = img_io_pwrite(s->file, hdr, sizeof(hdr), 60);
	if (ret < 0)
		return ret;
	/* Written, if not yet stable: from here on the state in memory
	 * follows the file, so later header writes agree with it (a failed
	 * flush then only leaks the old table). */
	s->h.nb_snapshots = t->n;
	s->h.snapshots_offset = new_off;
	t->file_off = new_off;
	t->size = len;
	ret = img_io_flush(s->file);
	if (ret == 0 && old_size)
		ret = qcow2_free_clusters_now(
			s, old_off, img_align_up(old_size, s->cluster_size));
	return ret;
}

static int check_writable(struct qcow2 *s)
{
	if (s->corrupt)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: image is marked corrupt; snapshots cannot change");
	if (s->data_file != s->file)
		return img_error(
			-ENOTSUP,
			"qcow2: internal snapshots are not supported with an external data file");
	return 0;
}

static int dup_info(const struct qcow2_snapshot *sn,
		    struct img_snapshot_info *out)
{
	out->id = strdup(sn->id);
	out->name = strdup(sn->name);
	if (!out->id || !out->name)
		return oom();
	out->vm_state_size = sn->vm_state_size;
	out->disk_size = sn->disk_size;
	out->date_sec = sn->date_sec;
	out->date_nsec = sn->date_nsec;
	out->vm_clock_nsec = sn->vm_clock_nsec;
	out->icount = sn->icount;
	return 0;
}

int qcow2_snapshot_list(struct img *img, struct img_snapshot_info **out,
			size_t *n)
{
	struct qcow2 *s = img_priv(img);
	struct img_snapshot_info *list;
	struct sn_table t;
	int ret;

	ret = table_read(s, &t);
	if (ret < 0)
		return ret;
	list = calloc(t.n ? t.n : 1, sizeof(*list));
	if (!list) {
		table_release(&t);
		return oom();
	}
	for (uint32_t i = 0; i < t.n && ret == 0; i++)
		ret = dup_info(&t.sn[i], &list[i]);
	*n = t.n;
	table_release(&t);
	if (ret < 0) {
		img_snapshot_list_free(list, *n);
		return ret;
	}
	*out = list;
	return 0;
}

/* QEMU's choice: one more than the largest numeric id. */
static char *new_id(const struct sn_table *t)
{
	unsigned long max = 0;
	char buf[32];

	for (uint32_t i = 0; i < t->n; i++) {
		unsigned long v = strtoul(t->sn[i].id, NULL, 10);

		if (v > max)
			max = v;
	}
	snprintf(buf, sizeof(buf), "%lu", max + 1);
	return strdup(buf);
}

int qcow2_snapshot_create(struct img *img, const char *name)
{
	struct qcow2 *s = img_priv(img);
	struct qcow2_snapshot *sn, *grown;
	struct sn_table t;
	struct timespec now;
	uint64_t l1_off = 0;
	int ret;

	ret = check_writable(s);
	if (ret < 0)
		return ret;
	if (strlen(name) > UINT16_MAX)
		return img_error(-EINVAL, "qcow2: snapshot name is too long");
	ret = table_read(s, &t);
	if (ret < 0)
		return ret;
	if (t.n >= MAX_SNAPSHOTS) {
		ret = img_error(-EFBIG, "qcow2: too many snapshots (%d)",
				MAX_SNAPSHOTS);
		goto out;
	}
	/* Every cluster gains a reference; refuse before the walk rather
	 * than fail half way through it. */
	if (s->refcount_max < (uint64_t)t.n + 2) {
		ret = img_error(
			-ERANGE,
			"qcow2: refcount_bits=%u is too small for another snapshot",
			s->refcount_bits);
		goto out;
	}
	grown = realloc(t.sn, (t.n + 1) * sizeof(*t.sn));
	if (!grown) {
		ret = oom();
		goto out;
	}
	t.sn = grown;
	sn = &t.sn[t.n];
	memset(sn, 0, sizeof(*sn));
	sn->id = new_id(&t);
	sn->name = strdup(name);
	t.n++;
	if (!sn->id || !sn->name) {
		ret = oom();
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	sn->date_sec = (uint32_t)now.tv_sec;
	/* Microseconds, as QEMU takes them from gettimeofday(). */
	sn->date_nsec = (uint32_t)(now.tv_nsec / 1000 * 1000);
	sn->disk_size = s->h.size;
	sn->icount = 0; /* what qemu-img writes */
	sn->l1_size = s->l1_size;

	ret = sync_all(s);
	if (ret < 0)
		goto out;
	if (s->l1_size) {
		ret = qcow2_alloc_clusters(
			s,
			img_align_up((uint64_t)s->l1_size * 8,
				     s->cluster_size) >>
				s->cluster_bits,
			&l1_off);
		if (ret == 0)
			ret = write_l1(s, l1_off, s->l1, s->l1_size, true);
		if (ret < 0)
			goto out;
	}
	sn->l1_table_offset = l1_off;
	ret = walk_l1(s, s->l1, s->l1_size, 1);
	if (ret == 0)
		ret = sync_all(s);
	if (ret == 0)
		ret = walk_l1(s, s->l1, s->l1_size, 0);
	if (ret == 0)
		ret = write_l1(s, s->h.l1_table_offset, s->l1, s->l1_size,
			       false);
	if (ret == 0)
		ret = sync_all(s);
	if (ret == 0)
		ret = table_write(s, &t);
out:
	table_release(&t);
	return ret;
}

int qcow2_snapshot_apply(struct img *img, const char *name_or_id)
{
	struct qcow2 *s = img_priv(img);
	const struct qcow2_snapshot *sn;
	uint64_t *l1 = NULL, new_off = 0, old_off = s->h.l1_table_offset;
	uint32_t n = 0, old_n = s->l1_size;
	struct sn_table t;
	uint8_t hdr[24];
	int64_t idx;
	int ret;

	ret = check_writable(s);
	if (ret == 0)
		ret = table_lookup(s, name_or_id, &t, &idx);
	if (ret < 0)
		return ret;
	sn = &t.sn[idx];
	ret = read_sn_l1(s, sn, &l1, &n);
	if (ret == 0)
		ret = sync_all(s);
	if (ret < 0)
		goto out;
	/* Everything the snapshot references gains the new active L1 as a
	 * referrer; with the snapshot still holding it, nothing it names
	 * has refcount 1, so the new L1 and its tables carry no COPIED. */
	ret = walk_l1(s, l1, n, 1);
	if (ret == 0)
		ret = sync_all(s);
	if (ret == 0)
		ret = walk_l1(s, l1, n, 0);
	if (ret == 0)
		ret = sync_all(s);
	if (ret == 0 && n)
		ret = qcow2_alloc_clusters(s,
					   img_align_up((uint64_t)n * 8,
							s->cluster_size) >>
						   s->cluster_bits,
					   &new_off);
	if (ret == 0)
		ret = write_l1(s, new_off, l1, n, false);
	if (ret == 0)
		ret = sync_all(s);
	if (ret < 0)
		goto out;
	img_put_be64(hdr, sn->disk_size);
	img_put_be32(hdr + 8, s->h.crypt_method);
	img_put_be32(hdr + 12, n);
	img_put_be64(hdr + 16, new_off);
	ret = img_io_pwrite(s->file, hdr, sizeof(hdr), 24);
	if (ret < 0)
		goto out;

	/* Switched (memory follows the file even if the flush fails, which
	 * then only leaks the old L1): the old active L1 and what only it
	 * referenced go. */
	{
		uint64_t *old = s->l1;

		s->l1 = l1;
		s->l1_size = n;
		s->h.l1_size = n;
		s->h.l1_table_offset = new_off;
		s->h.size = sn->disk_size;
		img_set_size(img, sn->disk_size);
		l1 = old;
	}
	ret = img_io_flush(s->file);
	if (ret == 0)
		ret = walk_l1(s, l1, old_n, -1);
	if (ret == 0 && old_n)
		ret = qcow2_free_clusters_now(s, old_off,
					      img_align_up((uint64_t)old_n * 8,
							   s->cluster_size));
	if (ret == 0)
		ret = sync_all(s);
out:
	free(l1);
	table_release(&t);
	return ret;
}

int qcow2_snapshot_delete(struct img *img, const char *name_or_id)
{
	struct qcow2 *s = img_priv(img);
	struct qcow2_snapshot gone;
	uint64_t *l1 = NULL;
	uint32_t n = 0;
	struct sn_table t;
	int64_t idx;
	int ret;

	ret = check_writable(s);
	if (ret == 0)
		ret = table_lookup(s, name_or_id, &t, &idx);
	if (ret < 0)
		return ret;
	ret = read_sn_l1(s, &t.sn[idx], &l1, &n);
	if (ret < 0) {
		table_release(&t);
		return ret;
	}
	gone = t.sn[idx];
	memmove(&t.sn[idx], &t.sn[idx + 1],
		(t.n - (uint64_t)idx - 1) * sizeof(*t.sn));
	t.n--;
	ret = sync_all(s);
	if (ret == 0)
		ret = table_write(s, &t);
	if (ret < 0)
		goto out;
	/* Unreferenced now: drop what the snapshot held, then give the
	 * active tables back their COPIED flags where they became sole
	 * owners. */
	ret = walk_l1(s, l1, n, -1);
	if (ret == 0 && gone.l1_size)
		ret = qcow2_free_clusters_now(
			s, gone.l1_table_offset,
			img_align_up((uint64_t)gone.l1_size * 8,
				     s->cluster_size));
	if (ret == 0)
		ret = sync_all(s);
	if (ret == 0)
		ret = walk_l1(s, s->l1, s->l1_size, 0);
	if (ret == 0)
		ret = write_l1(s, s->h.l1_table_offset, s->l1, s->l1_size,
			       false);
	if (ret == 0)
		ret = sync_all(s);
out:
	free(gone.id);
	free(gone.name);
	free(gone.unknown_extra);
	free(l1);
	table_release(&t);
	return ret;
}

int qcow2_snapshot_load(struct img *img, const char *name_or_id)
{
	struct qcow2 *s = img_priv(img);
	struct sn_table t;
	uint64_t *l1;
	uint32_t n;
	int64_t idx;
	int ret;

	ret = table_lookup(s, name_or_id, &t, &idx);
	if (ret < 0)
		return ret;
	ret = read_sn_l1(s, &t.sn[idx], &l1, &n);
	if (ret == 0) {
		free(s->l1);
		s->l1 = l1;
		s->l1_size = n;
		img_set_size(img, t.sn[idx].disk_size);
	}
	table_release(&t);
	return ret;
}

int qcow2_snapshot_check_table(struct qcow2 *s, unsigned fix,
			       struct img_check *res)
{
	struct sn_table t;
	uint64_t n_bad = 0;
	int ret;

	/* Unreadable tables are the refcount check's to report. */
	if (s->h.version < 3 || table_read(s, &t) < 0)
		return 0;
	fix &= s->read_only ? 0 : IMG_CHECK_FIX_ERRORS;
	for (uint32_t i = 0; i < t.n; i++) {
		char line[96];

		/* v3 requires vm_state_size_large and disk_size. */
		if (t.sn[i].extra_size >= SNX_DISK_SIZE + 8)
			continue;
		n_bad++;
		snprintf(line, sizeof(line),
			 "%s snapshot table entry %" PRIu32 " is incomplete",
			 fix ? "Repairing" : "ERROR", i);
		if (res->report)
			res->report(res->opaque, line);
	}
	ret = n_bad && fix ? table_write(s, &t) : 0;
	if (ret == 0 && n_bad && fix)
		ret = sync_all(s); /* the check reads refcounts from disk */
	table_release(&t);
	if (ret < 0)
		return ret;
	if (fix)
		res->corruptions_fixed += n_bad;
	else
		res->corruptions += n_bad;
	return 0;
}
