/* SPDX-License-Identifier: MIT */
/*
 * The VHDX format (MS-VHDX 1.0, as Hyper-V and QEMU 7.2 write it): a file
 * identifier, two headers (the valid one with the higher sequence number
 * wins), two region tables naming the BAT and the metadata region, the
 * metadata items (block size, virtual size, logical and physical sector
 * size, disk id, parent locator), the BAT (64-bit entries: state and the
 * block's offset in MiB, with a sector bitmap entry after every chunk of
 * 2^23 * sector_size / block_size payload entries) and the log.
 *
 * Supported: fixed and dynamic disks, block sizes 1 to 256 MiB, 512 and
 * 4096-byte logical sectors, log replay on open (into the file on a
 * read-write open; in memory, as an overlay of the replayed sectors, on a
 * read-only one), differencing disks read through their parent (located by
 * relative_path, then absolute_win32_path) with the sector bitmaps, and
 * writes. Created images are fixed or dynamic with an empty log.
 *
 * Writes (MS-VHDX 2.2.2.1, 2.3): before the first write after open both
 * headers are updated with a new FileWriteGuid and DataWriteGuid. Writes
 * are planned through .map (the core moves the data): a new block is
 * reserved at the end of the file (MiB aligned), the core writes the data
 * there, and the commit sets its BAT entry, in memory only until a flush,
 * which then:
 * extends the file and flushes the data; sets a new log GUID in both
 * headers (each header write flushed); writes one log entry holding the
 * changed 4 KiB BAT sectors at the start of the log and flushes it; writes
 * the sectors in place and flushes; clears the log GUID in both headers.
 * A crash before the log entry is complete leaves the old BAT (at worst
 * unreferenced blocks); after it, the next open replays the entry. Writing
 * to a differencing disk is not supported.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img-driver.h"

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define VHDX_HEADER1 (64 * KIB)
#define VHDX_HEADER2 (128 * KIB)
#define VHDX_REGION1 (192 * KIB)
#define VHDX_REGION2 (256 * KIB)
#define VHDX_HEADER_SIZE (4 * KIB)
#define VHDX_REGION_SIZE (64 * KIB)
#define VHDX_MAX_LOG (256 * MIB)
#define VHDX_MAX_META (256 * MIB)
#define VHDX_MAX_PATCHES 4096u /* sectors a read-only replay keeps */

#define PAYLOAD_NOT_PRESENT 0
#define PAYLOAD_UNDEFINED 1
#define PAYLOAD_ZERO 2
#define PAYLOAD_UNMAPPED 3
#define PAYLOAD_FULLY_PRESENT 6
#define PAYLOAD_PARTIALLY_PRESENT 7
#define SB_PRESENT 6

/* GUIDs in their on-disk (mixed-endian) byte order. */
static const uint8_t guid_bat[16] = { 0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6,
				      0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e,
				      0x9b, 0xfd, 0x4a, 0x08 };
static const uint8_t guid_meta[16] = { 0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47,
				       0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f,
				       0x05, 0x0f, 0x88, 0x6e };
static const uint8_t guid_file_params[16] = { 0x37, 0x67, 0xa1, 0xca,
					      0x36, 0xfa, 0x43, 0x4d,
					      0xb3, 0xb6, 0x33, 0xf0,
					      0xaa, 0x44, 0xe7, 0x6b };
static const uint8_t guid_vsize[16] = { 0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd,
					0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe,
					0xd8, 0x3b, 0xf4, 0xb8 };
static const uint8_t guid_disk_id[16] = { 0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2,
					  0x23, 0x45, 0x93, 0xef, 0xc3, 0x09,
					  0xe0, 0x00, 0xc7, 0x46 };
static const uint8_t guid_lsector[16] = { 0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9,
					  0x09, 0x47, 0xba, 0x47, 0xf2, 0x33,
					  0xa8, 0xfa, 0xab, 0x5f };
static const uint8_t guid_psector[16] = { 0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44,
					  0x71, 0x44, 0x9c, 0xc9, 0xe9, 0x88,
					  0x52, 0x51, 0xc5, 0x56 };
static const uint8_t guid_parent[16] = { 0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3,
					 0x4d, 0x45, 0xab, 0xf7, 0xd3, 0xd8,
					 0x48, 0x34, 0xab, 0x0c };
/* The parent locator type of a VHDX parent (the only one MS-VHDX defines). */
static const uint8_t guid_vhdx_locator[16] = { 0xb7, 0xef, 0x4a, 0xb0,
					       0x9e, 0xd1, 0x81, 0x4a,
					       0xb7, 0x89, 0x25, 0xb8,
					       0xe9, 0x44, 0x59, 0x13 };

/* A sector the log replay supplies (read-only opens). */
struct vhdx_patch {
	uint64_t file_off; /* 4 KiB aligned */
	uint8_t data[4096];
};

struct vhdx {
	struct img *img;
	uint8_t header[VHDX_HEADER_SIZE];
	uint64_t header_off;
	uint64_t size;
	uint32_t block_size;
	uint32_t lsector;
	uint32_t psector;
	bool has_parent;
	bool leave_allocated;
	uint64_t bat_off;
	uint64_t bat_len;
	uint64_t chunk_ratio;
	uint64_t n_blocks;
	uint64_t n_entries;
	uint64_t *bat;
	uint64_t dirty_lo, dirty_hi;
	uint64_t next_free; /* MiB aligned */
	uint64_t meta_off, meta_len;
	struct vhdx_patch *patches;
	size_t n_patches;
	/* The file as the replay left it, for the core's data reads. */
	struct img_io log_io;
	char *parent;
	uint64_t log_seq; /* sequence number of the next log entry */
	bool file_guid_new; /* FileWriteGuid renewed in this open */
	bool data_guid_new; /* DataWriteGuid renewed in this open */
};

static uint32_t crc32c_table[256];

static void crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78 : c >> 1;
		crc32c_table[i] = c;
	}
}

/* CRC-32C of buf with the 4 bytes at csum_off taken as zero. */
static uint32_t vhdx_crc(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t c = 0xffffffff;

	if (!crc32c_table[1])
		crc32c_init();
	for (size_t i = 0; i < len; i++) {
		uint8_t b = (i >= csum_off && i < csum_off + 4) ? 0 : buf[i];

		c = crc32c_table[(c ^ b) & 0xff] ^ (c >> 8);
	}
	return ~c;
}

static int vhdx_probe(const uint8_t *buf, size_t len)
{
	return len >= 8 && !memcmp(buf, "vhdxfile", 8) ? 100 : 0;
}

/* Read from the file as the log replay left it. */
static int vhdx_pread(struct vhdx *s, void *buf, uint64_t len, uint64_t off)
{
	int ret = img_io_pread(img_file(s->img), buf, len, off);

	if (ret < 0 || !s->n_patches)
		return ret;
	for (size_t i = 0; i < s->n_patches; i++) {
		const struct vhdx_patch *p = &s->patches[i];
		uint64_t a = p->file_off, b = p->file_off + 4096;

		if (b <= off || a >= off + len)
			continue;
		if (a < off)
			memcpy(buf, p->data + (off - a),
			       img_min(b, off + len) - off);
		else
			memcpy((uint8_t *)buf + (a - off), p->data,
			       img_min(b, off + len) - a);
	}
	return 0;
}

static struct vhdx *vhdx_of_log_io(struct img_io *io)
{
	return (struct vhdx *)((char *)io - offsetof(struct vhdx, log_io));
}

static int vhdx_log_io_pread(struct img_io *io, void *buf, uint64_t len,
			     uint64_t file_off)
{
	return vhdx_pread(vhdx_of_log_io(io), buf, len, file_off);
}

static int vhdx_log_io_size(struct img_io *io, uint64_t *size)
{
	return img_io_size(img_file(vhdx_of_log_io(io)->img), size);
}

/* Only read: the replay exists in memory on read-only opens alone. */
static const struct img_io_ops vhdx_log_io_ops = {
	.name = "vhdx-log",
	.pread = vhdx_log_io_pread,
	.get_size = vhdx_log_io_size,
};

static int vhdx_read_headers(struct vhdx *s)
{
	uint8_t h[2][VHDX_HEADER_SIZE];
	bool ok[2];
	int ret;

	for (int i = 0; i < 2; i++) {
		ret = img_io_pread(img_file(s->img), h[i], VHDX_HEADER_SIZE,
				   i ? VHDX_HEADER2 : VHDX_HEADER1);
		if (ret < 0)
			return ret;
		ok[i] = !memcmp(h[i], "head", 4) &&
			img_le32(h[i] + 4) ==
				vhdx_crc(h[i], VHDX_HEADER_SIZE, 4) &&
			img_le16(h[i] + 66) == 1;
	}
	if (!ok[0] && !ok[1])
		return img_error(
			-IMG_ECORRUPT,
			"vhdx: no valid header (signature, checksum, version 1)");
	if (ok[0] && ok[1] && img_le64(h[0] + 8) == img_le64(h[1] + 8) &&
	    memcmp(h[0], h[1], VHDX_HEADER_SIZE))
		return img_error(
			-IMG_ECORRUPT,
			"vhdx: both headers have sequence number %" PRIu64,
			img_le64(h[0] + 8));
	{
		int cur = !ok[0] ||
			  (ok[1] && img_le64(h[1] + 8) > img_le64(h[0] + 8));

		memcpy(s->header, h[cur], VHDX_HEADER_SIZE);
		s->header_off = cur ? VHDX_HEADER2 : VHDX_HEADER1;
	}
	if (img_le16(s->header + 64) != 0)
		return img_error(-ENOTSUP, "vhdx: unsupported log version %u",
				 img_le16(s->header + 64));
	return 0;
}

/*
 * Write the header, its sequence number raised, over the non-current copy
 * and flush: it becomes the current one.
 */
static int vhdx_write_header(struct vhdx *s)
{
	uint8_t *h = s->header;
	uint64_t off = s->header_off == VHDX_HEADER1 ? VHDX_HEADER2 :
						       VHDX_HEADER1;
	int ret;

	img_put_le64(h + 8, img_le64(h + 8) + 1);
	img_put_le32(h + 4, vhdx_crc(h, VHDX_HEADER_SIZE, 4));
	ret = img_io_pwrite(img_file(s->img), h, VHDX_HEADER_SIZE, off);
	if (ret >= 0)
		ret = img_io_flush(img_file(s->img));
	if (ret >= 0)
		s->header_off = off;
	return ret;
}

/*
 * Update both headers with log_guid (NULL: zero, the log is empty). The
 * first update after open takes a new FileWriteGuid; with data (a change
 * the guest can read) the first such takes a new DataWriteGuid.
 */
static int vhdx_update_headers(struct vhdx *s, bool data,
			       const uint8_t *log_guid)
{
	uint8_t *h = s->header;
	int ret = 0;

	if (!s->file_guid_new)
		ret = img_uuid_generate(h + 16);
	if (ret >= 0 && data && !s->data_guid_new)
		ret = img_uuid_generate(h + 32);
	if (ret < 0)
		return ret;
	s->file_guid_new = true;
	s->data_guid_new |= data;
	if (log_guid)
		memcpy(h + 48, log_guid, 16);
	else
		memset(h + 48, 0, 16);
	ret = vhdx_write_header(s);
	return ret < 0 ? ret : vhdx_write_header(s);
}

/*
 * Log replay: the log is a ring of entries ("loge", 4 KiB aligned); the
 * active sequence is the run of valid entries with consecutive sequence
 * numbers and the header's log GUID ending at the entry with the highest
 * sequence number. Its descriptors are applied in order.
 */
struct vhdx_log {
	uint8_t *buf;
	uint64_t len;
};

static bool vhdx_entry_valid(const struct vhdx *s, const struct vhdx_log *l,
			     uint64_t off, uint64_t *seq, uint64_t *entry_len)
{
	const uint8_t *e = l->buf + off;
	uint32_t len, ndesc;

	if (off + 64 > l->len || memcmp(e, "loge", 4))
		return false;
	len = img_le32(e + 8);
	ndesc = img_le32(e + 24);
	if (len < 4096 || len % 4096 || len > l->len - off ||
	    (uint64_t)ndesc * 32 + 64 > len ||
	    memcmp(e + 32, s->header + 48, 16))
		return false;
	*seq = img_le64(e + 16);
	*entry_len = len;
	/* Every descriptor and data sector repeats the sequence number. */
	{
		uint64_t data_off =
			img_align_up(64 + (uint64_t)ndesc * 32, 4096);

		if (!*seq || data_off > len)
			return false;
		for (uint32_t i = 0; i < ndesc; i++) {
			const uint8_t *d = e + 64 + 32 * i;
			const uint8_t *sec = e + data_off;

			if (img_le64(d + 24) != *seq)
				return false;
			if (!memcmp(d, "zero", 4))
				continue;
			if (memcmp(d, "desc", 4) || data_off + 4096 > len ||
			    memcmp(sec, "data", 4) ||
			    img_le32(sec + 4) != (uint32_t)(*seq >> 32) ||
			    img_le32(sec + 4092) != (uint32_t)*seq)
				return false;
			data_off += 4096;
		}
	}
	return img_le32(e + 4) == vhdx_crc(e, len, 4);
}

static int vhdx_apply(struct vhdx *s, bool in_file, uint64_t file_off,
		      const uint8_t *data)
{
	struct vhdx_patch *grown;
	size_t i;

	if (file_off % 4096)
		return img_error(
			-IMG_ECORRUPT,
			"vhdx: log writes to unaligned offset %#" PRIx64,
			file_off);
	if (in_file)
		return img_io_pwrite(img_file(s->img), data, 4096, file_off);
	for (i = 0; i < s->n_patches; i++)
		if (s->patches[i].file_off == file_off)
			break;
	if (i == s->n_patches && i >= VHDX_MAX_PATCHES)
		return img_error(
			-ENOTSUP,
			"vhdx: the log changes more than %u sectors: open read-write to replay it",
			VHDX_MAX_PATCHES);
	if (i == s->n_patches) {
		grown = realloc(s->patches, (i + 1) * sizeof(*grown));
		if (!grown)
			return img_error(-ENOMEM, "vhdx: out of memory");
		s->patches = grown;
		s->n_patches++;
		s->patches[i].file_off = file_off;
	}
	memcpy(s->patches[i].data, data, 4096);
	return 0;
}

static int vhdx_replay_entry(struct vhdx *s, const struct vhdx_log *l,
			     uint64_t off, uint64_t entry_len, bool in_file)
{
	const uint8_t *e = l->buf + off;
	uint32_t ndesc = img_le32(e + 24);
	uint64_t data_off = off + img_align_up(64 + (uint64_t)ndesc * 32, 4096);
	uint8_t sector[4096];
	int ret;

	for (uint32_t i = 0; i < ndesc; i++) {
		const uint8_t *d = e + 64 + 32 * i;
		uint64_t file_off = img_le64(d + 16);

		if (!memcmp(d, "zero", 4)) {
			uint64_t zlen = img_le64(d + 8);

			if (zlen % 4096 || zlen > 64 * MIB)
				return img_error(
					-IMG_ECORRUPT,
					"vhdx: log zero descriptor of %" PRIu64
					" bytes",
					zlen);
			memset(sector, 0, sizeof(sector));
			for (uint64_t k = 0; k < zlen; k += 4096) {
				ret = vhdx_apply(s, in_file, file_off + k,
						 sector);
				if (ret < 0)
					return ret;
			}
			continue;
		}
		if (memcmp(d, "desc", 4))
			return img_error(-IMG_ECORRUPT,
					 "vhdx: bad log descriptor signature");
		if (data_off + 4096 > off + entry_len ||
		    memcmp(l->buf + data_off, "data", 4))
			return img_error(-IMG_ECORRUPT,
					 "vhdx: log data sector missing");
		memcpy(sector, d + 8, 8);
		memcpy(sector + 8, l->buf + data_off + 8, 4084);
		memcpy(sector + 4092, d + 4, 4);
		ret = vhdx_apply(s, in_file, file_off, sector);
		if (ret < 0)
			return ret;
		data_off += 4096;
	}
	return 0;
}

static int vhdx_replay_log(struct vhdx *s, bool in_file)
{
	uint64_t log_off = img_le64(s->header + 72);
	uint32_t log_len = img_le32(s->header + 68);
	uint64_t file_size, best_seq = 0, best_off = 0, off, seq, len;
	struct vhdx_log l;
	bool found = false;
	int ret;

	if (img_is_zero(s->header + 48, 16))
		return 0; /* log GUID zero: nothing to replay */
	ret = img_io_size(img_file(s->img), &file_size);
	if (ret < 0)
		return ret;
	if (log_len % MIB || log_off % MIB || !log_len ||
	    log_len > VHDX_MAX_LOG || log_off > file_size ||
	    log_len > file_size - log_off)
		return img_error(-IMG_ECORRUPT,
				 "vhdx: log of %" PRIu32 " bytes at %#" PRIx64
				 " is outside the file or unaligned",
				 log_len, log_off);
	l.len = log_len;
	l.buf = malloc(log_len);
	if (!l.buf)
		return img_error(-ENOMEM, "vhdx: out of memory for the log");
	ret = img_io_pread(img_file(s->img), l.buf, log_len, log_off);
	if (ret < 0)
		goto out;
	/* The head: the valid entry with the highest sequence number. */
	for (off = 0; off < log_len; off += 4096)
		if (vhdx_entry_valid(s, &l, off, &seq, &len) &&
		    (!found || seq > best_seq)) {
			found = true;
			best_seq = seq;
			best_off = off;
		}
	if (!found)
		goto out;
	if (img_le64(l.buf + best_off + 48) > file_size) {
		ret = img_error(-IMG_ECORRUPT,
				"vhdx: the log needs a file of %" PRIu64
				" bytes, the file has %" PRIu64 " (truncated)",
				img_le64(l.buf + best_off + 48), file_size);
		goto out;
	}
	s->log_seq = best_seq;
	/* Walk back to the start of the sequence (the head's tail). */
	{
		uint64_t tail = img_le32(l.buf + best_off + 12);
		uint64_t n = 0, prev_seq = 0;

		if (tail % 4096 || tail >= log_len) {
			ret = img_error(-IMG_ECORRUPT,
					"vhdx: log tail %#" PRIx64 " is bad",
					tail);
			goto out;
		}
		off = tail;
		for (;;) {
			if (!vhdx_entry_valid(s, &l, off, &seq, &len)) {
				ret = img_error(
					-IMG_ECORRUPT,
					"vhdx: log entry at %#" PRIx64
					" in the active sequence is invalid",
					off);
				goto out;
			}
			if (n && seq != prev_seq + 1) {
				ret = img_error(
					-IMG_ECORRUPT,
					"vhdx: log sequence breaks at %#" PRIx64,
					off);
				goto out;
			}
			prev_seq = seq;
			ret = vhdx_replay_entry(s, &l, off, len, in_file);
			if (ret < 0 || off == best_off || ++n > log_len / 4096)
				break;
			off = (off + len) % log_len;
		}
	}
	if (ret >= 0 && in_file) {
		/* Replayed: the file holds every structure the log knew of;
		 * clear the log GUID so it is not replayed again. */
		uint64_t last = img_le64(l.buf + best_off + 56);

		if (last > file_size && last <= (1ull << 44) * MIB)
			ret = img_io_truncate(img_file(s->img), last);
		if (ret >= 0)
			ret = img_io_flush(img_file(s->img));
		if (ret >= 0)
			ret = vhdx_update_headers(s, false, NULL);
	}
out:
	free(l.buf);
	return ret;
}

static int vhdx_read_regions(struct vhdx *s, uint64_t *meta_len)
{
	uint8_t *r = malloc(VHDX_REGION_SIZE);
	bool have_bat = false, have_meta = false;
	int ret = 0;

	if (!r)
		return img_error(-ENOMEM, "vhdx: out of memory");
	for (int i = 0; i < 2; i++) {
		ret = vhdx_pread(s, r, VHDX_REGION_SIZE,
				 i ? VHDX_REGION2 : VHDX_REGION1);
		if (ret < 0)
			goto out;
		if (!memcmp(r, "regi", 4) &&
		    img_le32(r + 4) == vhdx_crc(r, VHDX_REGION_SIZE, 4))
			break;
		if (i) {
			ret = img_error(-IMG_ECORRUPT,
					"vhdx: no valid region table");
			goto out;
		}
	}
	if (img_le32(r + 8) > 2047) {
		ret = img_error(-IMG_ECORRUPT,
				"vhdx: region table has %" PRIu32 " entries",
				img_le32(r + 8));
		goto out;
	}
	for (uint32_t i = 0; i < img_le32(r + 8); i++) {
		const uint8_t *e = r + 16 + 32 * i;
		uint64_t off = img_le64(e + 16);
		uint32_t len = img_le32(e + 24);

		if (!memcmp(e, guid_bat, 16)) {
			s->bat_off = off;
			s->bat_len = len;
			have_bat = true;
		} else if (!memcmp(e, guid_meta, 16)) {
			s->meta_off = off;
			*meta_len = len;
			have_meta = true;
		} else if (img_le32(e + 28) & 1) {
			ret = img_error(-ENOTSUP,
					"vhdx: unknown required region %u", i);
			goto out;
		}
		if (off % MIB || len % MIB || off < MIB) {
			ret = img_error(-IMG_ECORRUPT,
					"vhdx: region %u at %#" PRIx64
					" (%" PRIu32
					" bytes) is not MiB aligned",
					i, off, len);
			goto out;
		}
	}
	if (!have_bat || !have_meta)
		ret = img_error(
			-IMG_ECORRUPT,
			"vhdx: the region table lacks the BAT or the metadata");
out:
	free(r);
	return ret;
}

/* Copy metadata item guid (exactly len bytes unless len is 0) to out. */
static int vhdx_meta_item(struct vhdx *s, const uint8_t *table,
			  uint64_t meta_len, const uint8_t *guid, void *out,
			  uint32_t len, uint32_t *got_len)
{
	uint16_t n = img_le16(table + 10);

	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *e = table + 32 + 32 * i;
		uint32_t off = img_le32(e + 16), l = img_le32(e + 20);

		if (memcmp(e, guid, 16))
			continue;
		if ((len && l != len) || off < 64 * KIB || off > meta_len ||
		    l > meta_len - off || (!len && l > 64 * KIB))
			return img_error(-IMG_ECORRUPT,
					 "vhdx: metadata item %u (%" PRIu32
					 " bytes at %" PRIu32 ") is bad",
					 i, l, off);
		if (got_len)
			*got_len = l;
		return vhdx_pread(s, out, l, s->meta_off + off);
	}
	return 0;
}

static int vhdx_read_meta(struct vhdx *s, uint64_t meta_len)
{
	static const uint8_t *const known[] = {
		guid_file_params, guid_vsize,	guid_disk_id,
		guid_lsector,	  guid_psector, guid_parent,
	};
	uint8_t table[64 * KIB], fp[8] = { 0 }, v[8] = { 0 }, ls[4] = { 0 },
				 ps[4] = { 0 };
	uint16_t n;
	int ret;

	if (meta_len < 64 * KIB || meta_len > VHDX_MAX_META)
		return img_error(-IMG_ECORRUPT,
				 "vhdx: metadata region of %" PRIu64 " bytes",
				 meta_len);
	ret = vhdx_pread(s, table, sizeof(table), s->meta_off);
	if (ret < 0)
		return ret;
	n = img_le16(table + 10);
	if (memcmp(table, "metadata", 8) || n > 2047)
		return img_error(
			-IMG_ECORRUPT,
			"vhdx: bad metadata table (signature or %u entries)",
			n);
	for (uint16_t i = 0; i < n; i++) {
		const uint8_t *e = table + 32 + 32 * i;
		bool is_known = false;

		for (size_t k = 0; k < IMG_ARRAY_SIZE(known); k++)
			is_known |= !memcmp(e, known[k], 16);
		if (!is_known && (img_le32(e + 24) & 4))
			return img_error(
				-ENOTSUP,
				"vhdx: unknown required metadata item %u", i);
	}
	if ((ret = vhdx_meta_item(s, table, meta_len, guid_file_params, fp, 8,
				  NULL)) < 0 ||
	    (ret = vhdx_meta_item(s, table, meta_len, guid_vsize, v, 8, NULL)) <
		    0 ||
	    (ret = vhdx_meta_item(s, table, meta_len, guid_lsector, ls, 4,
				  NULL)) < 0 ||
	    (ret = vhdx_meta_item(s, table, meta_len, guid_psector, ps, 4,
				  NULL)) < 0)
		return ret;
	s->block_size = img_le32(fp);
	s->leave_allocated = img_le32(fp + 4) & 1;
	s->has_parent = img_le32(fp + 4) & 2;
	s->size = img_le64(v);
	s->lsector = img_le32(ls);
	s->psector = img_le32(ps);
	if (!img_is_pow2(s->block_size) || s->block_size < MIB ||
	    s->block_size > 256 * MIB)
		return img_error(-IMG_ECORRUPT,
				 "vhdx: block size %" PRIu32
				 " is not a power of two in 1..256 MiB",
				 s->block_size);
	if ((s->lsector != 512 && s->lsector != 4096) ||
	    (s->psector != 512 && s->psector != 4096))
		return img_error(-IMG_ECORRUPT,
				 "vhdx: sector sizes %" PRIu32 "/%" PRIu32
				 " (512 or 4096)",
				 s->lsector, s->psector);
	if (s->size % s->lsector || s->size > 64ull << 40)
		return img_error(-IMG_ECORRUPT,
				 "vhdx: virtual size %" PRIu64
				 " is not whole sectors or above 64 TiB",
				 s->size);
	if (s->has_parent) {
		uint8_t loc[64 * KIB];
		uint32_t len = 0;

		memset(loc, 0, sizeof(loc));
		ret = vhdx_meta_item(s, table, meta_len, guid_parent, loc, 0,
				     &len);
		if (ret < 0)
			return ret;
		if (len >= 20 && memcmp(loc, guid_vhdx_locator, 16))
			return img_error(
				-ENOTSUP,
				"vhdx: the parent locator is not of the VHDX type");
		/* Header (20 bytes), then key/value entries (12 bytes each)
		 * pointing at UTF-16LE strings. */
		for (uint32_t i = 0; len >= 20 && i < img_le16(loc + 18) &&
				     20 + 12 * (i + 1) <= len;
		     i++) {
			const uint8_t *e = loc + 20 + 12 * i;
			uint32_t ko = img_le32(e), vo = img_le32(e + 4);
			uint16_t kl = img_le16(e + 8), vl = img_le16(e + 10);
			char *key = NULL, *val = NULL;

			if (ko > len || kl > len - ko || vo > len ||
			    vl > len - vo)
				return img_error(
					-IMG_ECORRUPT,
					"vhdx: parent locator entry %u is outside the item",
					i);
			if (img_utf16_to_utf8(loc + ko, kl, false, &key) < 0 ||
			    img_utf16_to_utf8(loc + vo, vl, false, &val) < 0) {
				free(key);
				free(val);
				return img_error(
					-IMG_ECORRUPT,
					"vhdx: parent locator entry %u is not UTF-16",
					i);
			}
			if ((!strcmp(key, "relative_path") ||
			     (!strcmp(key, "absolute_win32_path") &&
			      !s->parent)) &&
			    *val) {
				for (char *c = val; *c; c++)
					if (*c == '\\')
						*c = '/';
				free(s->parent);
				s->parent = val;
				val = NULL;
			}
			free(key);
			free(val);
		}
		if (!s->parent)
			return img_error(
				-IMG_ECORRUPT,
				"vhdx: differencing disk names no parent");
	}
	return 0;
}

static int vhdx_read_bat(struct vhdx *s, uint64_t file_size)
{
	uint64_t bytes;
	int ret;

	s->chunk_ratio = ((1ull << 23) * s->lsector) / s->block_size;
	s->n_blocks = (s->size + s->block_size - 1) / s->block_size;
	if (s->has_parent)
		s->n_entries =
			((s->n_blocks + s->chunk_ratio - 1) / s->chunk_ratio) *
			(s->chunk_ratio + 1);
	else
		s->n_entries =
			s->n_blocks +
			(s->n_blocks ? (s->n_blocks - 1) / s->chunk_ratio : 0);
	bytes = s->n_entries * 8;
	if (bytes > s->bat_len || s->bat_off > file_size ||
	    bytes > file_size - s->bat_off)
		return img_error(-IMG_ECORRUPT,
				 "vhdx: BAT of %" PRIu64
				 " entries does not fit its region or the file",
				 s->n_entries);
	ret = img_metadata_check(s->img, bytes, "a BAT");
	if (ret < 0)
		return ret;
	s->bat = malloc(bytes ? bytes : 8);
	if (!s->bat)
		return img_error(-ENOMEM, "vhdx: out of memory for the BAT");
	ret = vhdx_pread(s, s->bat, bytes, s->bat_off);
	if (ret < 0)
		return ret;
	s->next_free = img_align_up(file_size, MIB);
	for (uint64_t i = 0; i < s->n_entries; i++) {
		uint64_t off;

		s->bat[i] = img_le64(&s->bat[i]);
		off = (s->bat[i] >> 20) * MIB;
		if ((s->bat[i] & 7) >= PAYLOAD_FULLY_PRESENT && off < MIB)
			return img_error(-IMG_ECORRUPT,
					 "vhdx: BAT entry %" PRIu64
					 " points into the headers",
					 i);
		/* As QEMU: a block that starts past the end was lost (the
		 * last one may end past it: files used to grow by less than
		 * a block). check (IMG_OPEN_NO_REPAIR) reports it. */
		if ((s->bat[i] & 7) >= PAYLOAD_FULLY_PRESENT &&
		    off >= file_size &&
		    !(img_open_flags(s->img) & IMG_OPEN_NO_REPAIR))
			return img_error(
				-IMG_ECORRUPT,
				"vhdx: BAT entry %" PRIu64 " starts at %" PRIu64
				", past the end of the file (size %" PRIu64
				"): the image has been truncated",
				i, off, file_size);
		if (off + s->block_size > s->next_free &&
		    (s->bat[i] & 7) >= PAYLOAD_FULLY_PRESENT)
			s->next_free = img_align_up(off + s->block_size, MIB);
	}
	return 0;
}

static void vhdx_close(struct img *img)
{
	struct vhdx *s = img_priv(img);

	free(s->bat);
	free(s->patches);
	free(s->parent);
}

static int vhdx_open(struct img *img, unsigned flags)
{
	struct vhdx *s = img_priv(img);
	uint8_t id[8];
	uint64_t file_size, meta_len = 0;
	int ret;

	s->img = img;
	s->dirty_lo = UINT64_MAX;
	s->log_io.ops = &vhdx_log_io_ops;
	s->log_io.path = img_file(img)->path;
	s->log_io.flags = IMG_IO_RDONLY;
	ret = img_io_size(img_file(img), &file_size);
	if (ret >= 0)
		ret = img_io_pread(img_file(img), id, 8, 0);
	if (ret < 0)
		return ret;
	if (memcmp(id, "vhdxfile", 8))
		return img_error(-IMG_ECORRUPT,
				 "vhdx: no 'vhdxfile' file identifier");
	ret = vhdx_read_headers(s);
	if (ret >= 0)
		ret = vhdx_replay_log(s, !(flags & IMG_OPEN_RDONLY));
	if (ret >= 0)
		ret = vhdx_read_regions(s, &meta_len);
	s->meta_len = meta_len;
	if (ret >= 0)
		ret = vhdx_read_meta(s, meta_len);
	if (ret >= 0)
		ret = vhdx_read_bat(s, file_size);
	if (ret >= 0 && s->parent)
		ret = img_set_backing_name(img, s->parent, "vhdx");
	if (ret < 0) {
		vhdx_close(img);
		return ret;
	}
	img_set_size(img, s->size);
	return 0;
}

static uint64_t vhdx_bat_idx(const struct vhdx *s, uint64_t block)
{
	return block + block / s->chunk_ratio;
}

/*
 * In a partially present block: whether the sector holding off is in this
 * file (its sector bitmap bit set) in *present, and for how many bytes from
 * off, up to len (within the block), that stays so in *run.
 */
static int vhdx_sb_run(struct vhdx *s, uint64_t off, uint64_t len,
		       bool *present, uint64_t *run)
{
	uint64_t block = off / s->block_size, in = off % s->block_size;
	uint64_t sb = s->bat[(block / s->chunk_ratio) * (s->chunk_ratio + 1) +
			     s->chunk_ratio];
	uint64_t sec = in / s->lsector;
	uint64_t bit0 =
		(block % s->chunk_ratio) * (s->block_size / s->lsector) + sec;
	uint64_t nbits = (in + len - 1) / s->lsector - sec + 1, i = 0;
	uint8_t buf[512];
	int ret;

	if ((sb & 7) != SB_PRESENT)
		return img_error(
			-IMG_ECORRUPT,
			"vhdx: block %" PRIu64
			" is partially present without a sector bitmap",
			block);
	while (i < nbits) {
		uint64_t byte0 = (bit0 + i) / 8;
		uint64_t nbytes = img_min(sizeof(buf),
					  (bit0 + nbits - 1) / 8 - byte0 + 1);

		ret = vhdx_pread(s, buf, nbytes, (sb >> 20) * MIB + byte0);
		if (ret < 0)
			return ret;
		for (; i < nbits && (bit0 + i) / 8 < byte0 + nbytes; i++) {
			uint64_t bit = bit0 + i;
			bool p = buf[bit / 8 - byte0] >> (bit % 8) & 1;

			if (!i)
				*present = p;
			else if (p != *present)
				goto out;
		}
	}
out:
	*run = img_min(len, (sec + i) * s->lsector - in);
	return 0;
}

/*
 * A planned write (struct img_map.plan): n new blocks from guest block
 * block0, placed one after another from host offset file_off, which the
 * BAT names once their data is written.
 */
struct img_plan {
	uint64_t block0, n;
	uint64_t file_off;
};

/*
 * Refuse a block whose host range overlaps the headers, the log, the BAT
 * or the metadata region: a guest write there would destroy them.
 */
static int vhdx_block_check(const struct vhdx *s, uint64_t block, uint64_t host)
{
	const struct {
		const char *what;
		uint64_t off, len;
	} r[] = {
		{ "headers", 0, MIB },
		{ "log", img_le64(s->header + 72), img_le32(s->header + 68) },
		{ "BAT", s->bat_off, s->bat_len },
		{ "metadata region", s->meta_off, s->meta_len },
	};

	/* Without sums: the offsets come from the image. */
	for (size_t i = 0; i < IMG_ARRAY_SIZE(r); i++)
		if (host >= r[i].off ? host - r[i].off < r[i].len :
				       r[i].off - host < s->block_size)
			return img_error(-IMG_ECORRUPT,
					 "vhdx: block %" PRIu64 " at %#" PRIx64
					 " overlaps the %s",
					 block, host, r[i].what);
	return 0;
}

static bool vhdx_present(uint64_t e)
{
	return (e & 7) == PAYLOAD_FULLY_PRESENT ||
	       (e & 7) == PAYLOAD_PARTIALLY_PRESENT;
}

/*
 * .map for a write. Blocks the BAT names are overwritten in place, as long
 * a run as lies contiguous on the host. Other blocks get new space at the
 * end of the file, a run of them together: the space past next_free has
 * never been written (a failed write leaks what it reserved), so the bytes
 * of a new block outside the write read as zeroes without being written.
 * The plan names them in the BAT at commit.
 */
static int vhdx_map_write(struct vhdx *s, uint64_t off, uint64_t len,
			  struct img_map *m)
{
	bool peek = m->write == IMG_MAP_WRITE_IN_PLACE;
	uint64_t block = off / s->block_size, in = off % s->block_size;
	uint64_t last = (off + len - 1) / s->block_size;
	uint64_t e = s->bat[vhdx_bat_idx(s, block)], b, host;
	int ret;

	if (s->has_parent)
		return img_error(
			-ENOTSUP,
			"vhdx: writing to a differencing disk is not supported");
	m->len = img_min(len, s->block_size - in);
	if (!s->data_guid_new) {
		/* Two header writes and flushes: not on the ring's thread. */
		if (peek) {
			m->flags = 0;
			return 0;
		}
		ret = vhdx_update_headers(s, true, NULL);
		if (ret < 0)
			return ret;
	}
	if (vhdx_present(e)) {
		host = (e >> 20) * MIB;
		ret = vhdx_block_check(s, block, host);
		for (b = block + 1; ret >= 0 && b <= last; b++) {
			uint64_t next = s->bat[vhdx_bat_idx(s, b)];

			if (!vhdx_present(next) ||
			    (next >> 20) * MIB !=
				    host + (b - block) * s->block_size)
				break;
			ret = vhdx_block_check(s, b, (next >> 20) * MIB);
		}
		if (ret < 0)
			return ret;
		m->len = img_min(len, (b - block) * s->block_size - in);
		m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED |
			   IMG_EXT_OFFSET_VALID;
		m->io = img_file(s->img);
		m->file_off = host + in;
		return 0;
	}
	if (peek) {
		m->flags = 0;
		return 0;
	}
	for (b = block + 1;
	     b <= last && !vhdx_present(s->bat[vhdx_bat_idx(s, b)]); b++)
		;
	if (s->next_free / MIB + (b - block) * (s->block_size / MIB) >
	    (1ull << 44))
		return img_error(-ENOSPC, "vhdx: file full");
	m->plan = malloc(sizeof(*m->plan));
	if (!m->plan)
		return img_error(-ENOMEM, "vhdx: out of memory");
	*m->plan = (struct img_plan){ .block0 = block,
				      .n = b - block,
				      .file_off = s->next_free };
	s->next_free += (b - block) * s->block_size;
	m->len = img_min(len, (b - block) * s->block_size - in);
	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->io = img_file(s->img);
	m->file_off = m->plan->file_off + in;
	m->lock_off = block * s->block_size;
	m->lock_len = (b - block) * s->block_size;
	return 0;
}

/* The BAT names the new blocks of a written plan; it changes in memory
 * only, and reaches the file through the log at the next flush. */
static int vhdx_commit(struct img *img, struct img_plan *plan, int result)
{
	struct vhdx *s = img_priv(img);
	int ret = 0;

	/* A failed write leaks the space: it may hold part of the data. */
	for (uint64_t k = 0; result >= 0 && k < plan->n; k++) {
		uint64_t idx = vhdx_bat_idx(s, plan->block0 + k);

		if (vhdx_present(s->bat[idx])) {
			ret = img_error(
				-EIO,
				"vhdx: block %" PRIu64
				" was allocated under a write in flight",
				plan->block0 + k);
			break;
		}
		s->bat[idx] = ((plan->file_off + k * s->block_size) / MIB)
				      << 20 |
			      PAYLOAD_FULLY_PRESENT;
		if (idx < s->dirty_lo)
			s->dirty_lo = idx;
		if (idx + 1 > s->dirty_hi)
			s->dirty_hi = idx + 1;
	}
	free(plan);
	return ret;
}

/*
 * One log cycle: n 4 KiB sectors (data) for file offsets offs go into a log
 * entry at the start of the log under a new log GUID, then in place; the
 * log is empty again when this returns 0. file_size is the file's size,
 * already flushed.
 */
static int vhdx_log_write(struct vhdx *s, const uint8_t *data,
			  const uint64_t *offs, uint32_t n, uint64_t file_size)
{
	struct img_io *io = img_file(s->img);
	uint64_t desc_len = img_align_up(64 + (uint64_t)n * 32, 4096);
	uint64_t len = desc_len + (uint64_t)n * 4096;
	uint64_t seq = ++s->log_seq;
	uint8_t guid[16], *e;
	int ret;

	e = calloc(1, len);
	if (!e)
		return img_error(-ENOMEM, "vhdx: out of memory for the log");
	ret = img_uuid_generate(guid);
	if (ret >= 0)
		ret = vhdx_update_headers(s, true, guid);
	if (ret < 0)
		goto out;
	memcpy(e, "loge", 4);
	img_put_le32(e + 8, (uint32_t)len);
	img_put_le32(e + 12, 0); /* tail: this entry, at the log's start */
	img_put_le64(e + 16, seq);
	img_put_le32(e + 24, n);
	memcpy(e + 32, guid, 16);
	img_put_le64(e + 48, file_size / MIB * MIB);
	img_put_le64(e + 56, img_align_up(file_size, MIB));
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *d = e + 64 + 32 * i, *sec = e + desc_len + 4096 * i;
		const uint8_t *src = data + 4096 * i;

		memcpy(d, "desc", 4);
		memcpy(d + 4, src + 4092, 4);
		memcpy(d + 8, src, 8);
		img_put_le64(d + 16, offs[i]);
		img_put_le64(d + 24, seq);
		memcpy(sec, "data", 4);
		img_put_le32(sec + 4, (uint32_t)(seq >> 32));
		memcpy(sec + 8, src + 8, 4084);
		img_put_le32(sec + 4092, (uint32_t)seq);
	}
	img_put_le32(e + 4, vhdx_crc(e, len, 4));
	ret = img_io_pwrite(io, e, len, img_le64(s->header + 72));
	if (ret >= 0)
		ret = img_io_flush(io);
	for (uint32_t i = 0; i < n && ret >= 0; i++)
		ret = img_io_pwrite(io, data + 4096 * i, 4096, offs[i]);
	if (ret >= 0)
		ret = img_io_flush(io);
	if (ret >= 0)
		ret = vhdx_update_headers(s, true, NULL);
out:
	free(e);
	return ret;
}

/* Write BAT entries [lo, hi) through the log, as few cycles as fit. */
static int vhdx_write_bat(struct vhdx *s, uint64_t lo, uint64_t hi,
			  uint64_t file_size)
{
	uint64_t log_off = img_le64(s->header + 72);
	uint32_t log_len = img_le32(s->header + 68), max_n;
	uint64_t first = lo * 8 / 4096, last = (hi * 8 + 4095) / 4096;
	uint64_t *offs;
	uint8_t *data;
	int ret = 0;

	if (log_len < MIB || log_len % MIB || log_off % MIB || log_off < MIB ||
	    log_off > file_size || log_len > file_size - log_off)
		return img_error(-ENOTSUP,
				 "vhdx: cannot write: the log (%" PRIu32
				 " bytes at %#" PRIx64 ") is unusable",
				 log_len, log_off);
	max_n = log_len / 4096 - 1;
	while (img_align_up(64 + (uint64_t)max_n * 32, 4096) +
		       (uint64_t)max_n * 4096 >
	       log_len)
		max_n--;
	max_n = (uint32_t)img_min(max_n, last - first);
	data = malloc((size_t)max_n * 4096);
	offs = malloc((size_t)max_n * sizeof(*offs));
	if (!data || !offs) {
		ret = img_error(-ENOMEM, "vhdx: out of memory");
		goto out;
	}
	for (uint64_t sec = first; sec < last && ret >= 0;) {
		uint32_t n = (uint32_t)img_min(max_n, last - sec);

		for (uint32_t i = 0; i < n && ret >= 0; i++) {
			uint64_t e0 = (sec + i) * 512, e1 = e0 + 512;
			uint8_t *p = data + 4096 * i;

			offs[i] = s->bat_off + (sec + i) * 4096;
			/* The region's bytes past the last entry stay. */
			if (e1 > s->n_entries)
				ret = vhdx_pread(s, p, 4096, offs[i]);
			for (uint64_t k = e0; k < img_min(e1, s->n_entries);
			     k++)
				img_put_le64(p + 8 * (k - e0), s->bat[k]);
		}
		if (ret >= 0)
			ret = vhdx_log_write(s, data, offs, n, file_size);
		sec += n;
	}
out:
	free(data);
	free(offs);
	return ret;
}

static int vhdx_flush(struct img *img)
{
	struct vhdx *s = img_priv(img);
	struct img_io *io = img_file(img);
	uint64_t size;
	int ret;

	if (s->dirty_lo >= s->dirty_hi)
		return img_io_flush(io);
	/* The new blocks' data is stable before any BAT entry names it. */
	ret = img_io_size(io, &size);
	if (ret >= 0 && size < s->next_free) {
		ret = img_io_truncate(io, s->next_free);
		size = s->next_free;
	}
	if (ret >= 0)
		ret = img_io_flush(io);
	if (ret >= 0)
		ret = vhdx_write_bat(s, s->dirty_lo, s->dirty_hi, size);
	if (ret < 0)
		return ret;
	s->dirty_lo = UINT64_MAX;
	s->dirty_hi = 0;
	return 0;
}

/*
 * Plain data of a block at host block_off. Only the block's start must be
 * in the file: the last block of a file may end past it (QEMU accepts such
 * files, and our writer grows a file by what it writes); the rest reads as
 * zeroes, as QEMU reports it (data and zero), without a host offset (the
 * bytes are not in the file).
 */
static int vhdx_map_data(struct vhdx *s, uint64_t block_off, uint64_t in,
			 struct img_map *m)
{
	struct img_io *io = s->n_patches ? &s->log_io : img_file(s->img);
	uint64_t size;
	int ret;

	m->flags = IMG_EXT_DATA | IMG_EXT_ALLOCATED | IMG_EXT_OFFSET_VALID;
	m->io = io;
	m->file_off = block_off + in;
	ret = img_io_holds(io, m->file_off + m->len, &size);
	if (ret)
		return ret < 0 ? ret : 0;
	/* Not even the start: the core's read fails naming the offsets. */
	if (size <= block_off)
		return 0;
	if (size > m->file_off)
		m->len = size - m->file_off;
	else
		m->flags = IMG_EXT_DATA | IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
	return 0;
}

static int vhdx_map(struct img *img, uint64_t off, uint64_t len,
		    struct img_map *m)
{
	struct vhdx *s = img_priv(img);
	uint64_t block = off / s->block_size, in = off % s->block_size;
	uint64_t e = s->bat[vhdx_bat_idx(s, block)];

	if (m->write != IMG_MAP_NO_WRITE)
		return vhdx_map_write(s, off, len, m);
	m->len = img_min(len, s->block_size - in);
	switch (e & 7) {
	case PAYLOAD_PARTIALLY_PRESENT:
		if (s->has_parent) {
			bool present;
			int ret =
				vhdx_sb_run(s, off, m->len, &present, &m->len);

			if (ret < 0 || !present)
				return ret;
		}
		/* fall through */
	case PAYLOAD_FULLY_PRESENT:
		return vhdx_map_data(s, (e >> 20) * MIB, in, m);
	case PAYLOAD_ZERO:
		m->flags = IMG_EXT_ZERO | IMG_EXT_ALLOCATED;
		return 0;
	default:
		m->flags = s->has_parent ? 0 : IMG_EXT_ZERO;
		return 0;
	}
}

static int vhdx_info(struct img *img, struct img_info *info)
{
	struct vhdx *s = img_priv(img);

	info->cluster_size = s->block_size;
	return 0;
}

static int vhdx_check(struct img *img, unsigned flags, struct img_check *res)
{
	struct vhdx *s = img_priv(img);
	uint64_t file_size;
	int ret;

	ret = img_io_size(img_file(img), &file_size);
	if (ret < 0)
		return ret;
	for (uint64_t b = 0; b < s->n_blocks; b++) {
		uint64_t e = s->bat[vhdx_bat_idx(s, b)];

		if ((e & 7) < PAYLOAD_FULLY_PRESENT)
			continue;
		res->allocated_clusters++;
		if ((e >> 20) * MIB >= file_size) {
			img_check_corrupt(
				res,
				"ERROR block %" PRIu64 " at %#" PRIx64
				" starts past the end of the file (size %" PRIu64
				"): the image has been truncated",
				b, (uint64_t)((e >> 20) * MIB), file_size);
		}
	}
	res->total_clusters = s->n_blocks;
	res->has_stats = true;
	return 0;
}

static void vhdx_put_header(uint8_t *h, uint64_t seq, const uint8_t *guids,
			    uint32_t log_len)
{
	memset(h, 0, VHDX_HEADER_SIZE);
	memcpy(h, "head", 4);
	img_put_le64(h + 8, seq);
	memcpy(h + 16, guids, 32); /* FileWriteGuid, DataWriteGuid */
	img_put_le16(h + 66, 1);
	img_put_le32(h + 68, log_len);
	img_put_le64(h + 72, MIB);
	img_put_le32(h + 4, vhdx_crc(h, VHDX_HEADER_SIZE, 4));
}

static void vhdx_put_meta_entry(uint8_t *t, unsigned i, const uint8_t *guid,
				uint32_t off, uint32_t len, uint32_t flags)
{
	uint8_t *e = t + 32 + 32 * i;

	memcpy(e, guid, 16);
	img_put_le32(e + 16, off);
	img_put_le32(e + 20, len);
	img_put_le32(e + 24, flags);
}

static int vhdx_create(const char *path, struct img_io *file,
		       const struct img_create_opts *opts)
{
	const char *subformat = "dynamic";
	uint64_t block_size = 0, log_size = MIB, lsector = 512, n_blocks;
	uint64_t chunk, n_entries, bat_len, meta_off, data_off;
	bool fixed, zero_state = true;
	uint8_t guids[32], *buf = NULL, *u16 = NULL;
	size_t u16_len;
	int ret;

	if ((ret = img_opt_str(opts, "subformat", &subformat)) < 0 ||
	    (ret = img_opt_size(opts, "block_size", &block_size)) < 0 ||
	    (ret = img_opt_size(opts, "log_size", &log_size)) < 0 ||
	    (ret = img_opt_u64(opts, "logical_sector_size", &lsector)) < 0 ||
	    (ret = img_opt_bool(opts, "block_state_zero", &zero_state)) < 0)
		return ret;
	if (strcmp(subformat, "dynamic") && strcmp(subformat, "fixed"))
		return img_error(
			-EINVAL,
			"vhdx: invalid subformat '%s' (dynamic, fixed)",
			subformat);
	fixed = !strcmp(subformat, "fixed");
	if (opts->size > 64ull << 40)
		return img_error(-EINVAL,
				 "vhdx: size %" PRIu64 " is above 64 TiB",
				 opts->size);
	if (!block_size)
		block_size = opts->size > 32ull << 40  ? 64 * MIB :
			     opts->size > 100ull << 30 ? 32 * MIB :
			     opts->size > 1ull << 30   ? 16 * MIB :
							 8 * MIB;
	if (!img_is_pow2(block_size) || block_size < MIB ||
	    block_size > 256 * MIB)
		return img_error(-EINVAL,
				 "vhdx: block size %" PRIu64
				 " is not a power of two in 1..256 MiB",
				 block_size);
	if (log_size < MIB || log_size % MIB || log_size > VHDX_MAX_LOG)
		return img_error(-EINVAL,
				 "vhdx: log size %" PRIu64
				 " is not a multiple of 1 MiB up to 256 MiB",
				 log_size);
	if (lsector != 512 && lsector != 4096)
		return img_error(-EINVAL,
				 "vhdx: logical sector size %" PRIu64
				 " (512 or 4096)",
				 lsector);
	if (opts->size % lsector)
		return img_error(-EINVAL,
				 "vhdx: size %" PRIu64
				 " is not a multiple of the sector size",
				 opts->size);
	if (opts->backing_file)
		return img_error(
			-ENOTSUP,
			"vhdx: creating differencing disks is not supported");
	n_blocks = (opts->size + block_size - 1) / block_size;
	chunk = ((1ull << 23) * lsector) / block_size;
	n_entries = n_blocks + (n_blocks ? (n_blocks - 1) / chunk : 0);
	bat_len = img_align_up(n_entries ? n_entries * 8 : 1, MIB);
	meta_off = MIB + log_size + bat_len;
	data_off = meta_off + MIB;
	buf = calloc(1, VHDX_REGION_SIZE);
	if (!buf)
		return img_error(-ENOMEM, "vhdx: out of memory");
	ret = img_io_truncate(file, 0);
	/* File identifier with the creator. */
	memcpy(buf, "vhdxfile", 8);
	if (ret >= 0)
		ret = img_utf8_to_utf16("img", false, &u16, &u16_len);
	if (ret >= 0) {
		memcpy(buf + 8, u16, u16_len);
		free(u16);
		ret = img_io_pwrite(file, buf, VHDX_REGION_SIZE, 0);
	}
	/* Headers. */
	if (ret >= 0)
		ret = img_uuid_generate(guids);
	if (ret >= 0)
		ret = img_uuid_generate(guids + 16);
	for (int i = 0; i < 2 && ret >= 0; i++) {
		vhdx_put_header(buf, (uint64_t)i, guids, (uint32_t)log_size);
		ret = img_io_pwrite(file, buf, VHDX_HEADER_SIZE,
				    i ? VHDX_HEADER2 : VHDX_HEADER1);
	}
	/* Region tables. */
	memset(buf, 0, VHDX_REGION_SIZE);
	memcpy(buf, "regi", 4);
	img_put_le32(buf + 8, 2);
	memcpy(buf + 16, guid_bat, 16);
	img_put_le64(buf + 32, MIB + log_size);
	img_put_le32(buf + 40, (uint32_t)bat_len);
	img_put_le32(buf + 44, 1);
	memcpy(buf + 48, guid_meta, 16);
	img_put_le64(buf + 64, meta_off);
	img_put_le32(buf + 72, (uint32_t)MIB);
	img_put_le32(buf + 76, 1);
	img_put_le32(buf + 4, vhdx_crc(buf, VHDX_REGION_SIZE, 4));
	for (int i = 0; i < 2 && ret >= 0; i++)
		ret = img_io_pwrite(file, buf, VHDX_REGION_SIZE,
				    i ? VHDX_REGION2 : VHDX_REGION1);
	/* Metadata: the table, then the items from 64 KiB on. */
	memset(buf, 0, VHDX_REGION_SIZE);
	memcpy(buf, "metadata", 8);
	img_put_le16(buf + 10, 5);
	vhdx_put_meta_entry(buf, 0, guid_file_params, 64 * KIB, 8, 4);
	vhdx_put_meta_entry(buf, 1, guid_vsize, 64 * KIB + 8, 8, 6);
	vhdx_put_meta_entry(buf, 2, guid_disk_id, 64 * KIB + 16, 16, 6);
	vhdx_put_meta_entry(buf, 3, guid_lsector, 64 * KIB + 32, 4, 6);
	vhdx_put_meta_entry(buf, 4, guid_psector, 64 * KIB + 36, 4, 6);
	if (ret >= 0)
		ret = img_io_pwrite(file, buf, VHDX_REGION_SIZE, meta_off);
	memset(buf, 0, 64);
	img_put_le32(buf, (uint32_t)block_size);
	img_put_le32(buf + 4, fixed ? 1 : 0);
	img_put_le64(buf + 8, opts->size);
	if (ret >= 0)
		ret = img_uuid_generate(buf + 16);
	img_put_le32(buf + 32, (uint32_t)lsector);
	img_put_le32(buf + 36, 4096);
	if (ret >= 0)
		ret = img_io_pwrite(file, buf, 64, meta_off + 64 * KIB);
	/* BAT: fixed disks map every block in order after the metadata. */
	if (ret >= 0 && fixed && n_entries) {
		uint64_t *bat = calloc(n_entries, 8);

		if (!bat) {
			ret = img_error(-ENOMEM, "vhdx: out of memory");
		} else {
			for (uint64_t b = 0; b < n_blocks; b++)
				img_put_le64(&bat[b + b / chunk],
					     ((data_off + b * block_size) / MIB)
							     << 20 |
						     PAYLOAD_FULLY_PRESENT);
			ret = img_io_pwrite(file, bat, n_entries * 8,
					    MIB + log_size);
			free(bat);
		}
	}
	if (ret >= 0)
		ret = img_io_truncate(
			file, data_off + (fixed ? n_blocks * block_size : 0));
	free(buf);
	return ret;
}

static const struct img_opt_desc vhdx_create_opts[] = {
	{ "size", IMG_OPT_SIZE, "Virtual disk size; max of 64TB.", NULL },
	{ "log_size", IMG_OPT_SIZE, "Log size; min 1MB.", "1048576" },
	{ "block_size", IMG_OPT_SIZE,
	  "Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.",
	  "0" },
	{ "subformat", IMG_OPT_STR,
	  "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.",
	  NULL },
	{ "block_state_zero", IMG_OPT_BOOL,
	  "Accepted for qemu-img compatibility; unwritten blocks read as zeroes either way",
	  NULL },
	{ "logical_sector_size", IMG_OPT_NUM,
	  "Logical sector size, 512 (default) or 4096", NULL },
	{ NULL, 0, NULL, NULL },
};

static const struct img_create_ops vhdx_create_ops = {
	.create = vhdx_create,
	.opts = vhdx_create_opts,
};

const struct img_driver vhdx_driver = {
	.name = "vhdx",
	.priv_size = sizeof(struct vhdx),
	.probe = vhdx_probe,
	.open = vhdx_open,
	.close = vhdx_close,
	.flush = vhdx_flush,
	.map = vhdx_map,
	.commit = vhdx_commit,
	.create = &vhdx_create_ops,
	.info = vhdx_info,
	.check = vhdx_check,
};
