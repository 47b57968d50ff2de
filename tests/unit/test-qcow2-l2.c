/* SPDX-License-Identifier: MIT */
/*
 * qcow2-l2.c, the pure logic of L2 entries, on hand-built entries: the kind
 * of each (sub)cluster for standard and extended entries and with an
 * external data file, the host ranges decoded from normal and compressed
 * entries, the subcluster masks writes and zeroes use, and validation of
 * bad entries (unaligned host offsets, invalid bitmaps, compressed
 * descriptors out of range, reserved bits in strict mode).
 */
#include "../../formats/qcow2/qcow2.h"
#include "tap.h"

static struct img_io file_io, data_io;

/* A geometry as the driver sets it up; no image behind it. */
static struct qcow2 geom(unsigned cluster_bits, bool extended_l2,
			 bool data_file)
{
	struct qcow2 s = { .cluster_bits = cluster_bits };

	s.cluster_size = 1ull << cluster_bits;
	s.extended_l2 = extended_l2;
	s.l2_entry_size = extended_l2 ? 16 : 8;
	s.subcluster_bits = extended_l2 ? cluster_bits - 5 : cluster_bits;
	s.file = &file_io;
	s.data_file = data_file ? &data_io : &file_io;
	return s;
}

static void test_standard(void)
{
	struct qcow2 s = geom(16, false, false);
	struct qcow2_l2_entry e;
	const uint64_t host = 5ull << 16;

	CHECK_EQ(qcow2_subcluster_type(&s, 0, 0, 0), QCOW2_CLUSTER_UNALLOCATED);
	CHECK_EQ(qcow2_subcluster_type(&s, host | QCOW2_OFLAG_COPIED, 0, 0),
		 QCOW2_CLUSTER_NORMAL);
	/* Shared with a snapshot: still data, only not COPIED. */
	CHECK_EQ(qcow2_subcluster_type(&s, host, 0, 0), QCOW2_CLUSTER_NORMAL);
	CHECK_EQ(qcow2_subcluster_type(&s, QCOW2_OFLAG_ZERO, 0, 0),
		 QCOW2_CLUSTER_ZERO_PLAIN);
	CHECK_EQ(qcow2_subcluster_type(&s, host | QCOW2_OFLAG_ZERO, 0, 0),
		 QCOW2_CLUSTER_ZERO_ALLOC);
	/* COPIED with offset 0 is unallocated without a data file. */
	CHECK(!qcow2_l2_has_host(&s, QCOW2_OFLAG_COPIED));
	CHECK_EQ(qcow2_subcluster_type(&s, QCOW2_OFLAG_COPIED, 0, 0),
		 QCOW2_CLUSTER_UNALLOCATED);

	CHECK_OK(
		qcow2_l2_decode(&s, host | QCOW2_OFLAG_COPIED, 0, 0x30000, &e));
	CHECK(e.has_host);
	CHECK_EQ(e.host, host);
	CHECK_EQ(qcow2_l2_type_at(&s, &e, 0x1234), QCOW2_CLUSTER_NORMAL);
	CHECK_OK(qcow2_l2_decode(&s, 0, 0, 0, &e));
	CHECK(!e.has_host);
	CHECK_EQ(e.host, 0);
}

static void test_data_file(void)
{
	struct qcow2 s = geom(16, false, true);
	struct qcow2_l2_entry e;

	/* Host offset 0 is real in a data file: COPIED tells it apart. */
	CHECK(qcow2_l2_has_host(&s, QCOW2_OFLAG_COPIED));
	CHECK_EQ(qcow2_subcluster_type(&s, QCOW2_OFLAG_COPIED, 0, 0),
		 QCOW2_CLUSTER_NORMAL);
	CHECK_EQ(qcow2_subcluster_type(&s, 0, 0, 0), QCOW2_CLUSTER_UNALLOCATED);
	CHECK_OK(qcow2_l2_decode(&s, QCOW2_OFLAG_COPIED, 0, 0, &e));
	CHECK(e.has_host);
	CHECK_EQ(e.host, 0);
	/* Compressed clusters cannot live in a data file. */
	CHECK_ERR(qcow2_l2_validate(&s, QCOW2_OFLAG_COMPRESSED | 0x20000, 0, 0,
				    false),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "external data file");
}

static void test_extended(void)
{
	struct qcow2 s = geom(16, true, false);
	const uint64_t host = 7ull << 16, sc = 1ull << s.subcluster_bits;
	/* Subclusters 0-1 data, 2 zero, 3 unallocated, 31 zero. */
	uint64_t bm = 0x3 | (1ull << (32 + 2)) | (1ull << 63);
	struct qcow2_l2_entry e;

	CHECK_EQ(qcow2_subcluster_type(&s, host | QCOW2_OFLAG_COPIED, bm, 0),
		 QCOW2_CLUSTER_NORMAL);
	CHECK_EQ(qcow2_subcluster_type(&s, host | QCOW2_OFLAG_COPIED, bm, 2),
		 QCOW2_CLUSTER_ZERO_ALLOC);
	CHECK_EQ(qcow2_subcluster_type(&s, host | QCOW2_OFLAG_COPIED, bm, 3),
		 QCOW2_CLUSTER_UNALLOCATED);
	CHECK_EQ(qcow2_subcluster_type(&s, 0, 1ull << 63, 31),
		 QCOW2_CLUSTER_ZERO_PLAIN);
	/* The standard zero flag means nothing with extended entries. */
	CHECK_EQ(qcow2_subcluster_type(&s, QCOW2_OFLAG_ZERO, 0, 0),
		 QCOW2_CLUSTER_UNALLOCATED);

	CHECK_OK(qcow2_l2_decode(&s, host | QCOW2_OFLAG_COPIED, bm, 0, &e));
	CHECK_EQ(qcow2_l2_type_at(&s, &e, sc - 1), QCOW2_CLUSTER_NORMAL);
	CHECK_EQ(qcow2_l2_type_at(&s, &e, sc + 1), QCOW2_CLUSTER_NORMAL);
	CHECK_EQ(qcow2_l2_type_at(&s, &e, 2 * sc), QCOW2_CLUSTER_ZERO_ALLOC);
	CHECK_EQ(qcow2_l2_type_at(&s, &e, 3 * sc + 5),
		 QCOW2_CLUSTER_UNALLOCATED);
	CHECK_EQ(qcow2_l2_type_at(&s, &e, 31 * sc), QCOW2_CLUSTER_ZERO_ALLOC);

	CHECK_EQ(qcow2_l2_subcluster_mask(&s, 0, 1), 0x1);
	CHECK_EQ(qcow2_l2_subcluster_mask(&s, sc - 1, sc + 1), 0x3);
	CHECK_EQ(qcow2_l2_subcluster_mask(&s, 2 * sc, 4 * sc), 0xc);
	CHECK_EQ(qcow2_l2_subcluster_mask(&s, 0, s.cluster_size), 0xffffffff);
	CHECK_EQ(qcow2_l2_subcluster_mask(&s, 31 * sc, s.cluster_size),
		 0x80000000);

	/* Allocated and zero at once. */
	CHECK_ERR(qcow2_l2_validate(&s, host | QCOW2_OFLAG_COPIED,
				    0x4 | (1ull << 34), 0x10000, false),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "invalid subcluster bitmap");
	CHECK_STR_HAS(img_last_error(), "0x10000");
	/* Allocated subclusters without a host cluster. */
	CHECK_ERR(qcow2_l2_validate(&s, 0, 0x1, 0, false), -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "without a host cluster");
	/* Zero subclusters need no host cluster. */
	CHECK_OK(qcow2_l2_validate(&s, 0, QCOW2_EXTL2_ALL_ZERO, 0, false));
	/* The zero flag is reserved here: only strict refuses it. */
	CHECK_OK(qcow2_l2_validate(&s, QCOW2_OFLAG_ZERO, 0, 0, false));
	CHECK_ERR(qcow2_l2_validate(&s, QCOW2_OFLAG_ZERO, 0, 0, true),
		  -IMG_ECORRUPT);
	/* A compressed cluster has no bitmap. */
	CHECK_ERR(qcow2_l2_validate(&s, QCOW2_OFLAG_COMPRESSED | 0x20000, 1, 0,
				    false),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "has subcluster bitmap");
}

static void test_compressed(void)
{
	struct qcow2 s = geom(16, false, false);
	unsigned x = 62 - (16 - 8);
	/* Data at 0x30100 to the end of the third sector it touches. */
	uint64_t l2e = QCOW2_OFLAG_COMPRESSED | (2ull << x) | 0x30100;
	struct qcow2_l2_entry e;

	CHECK_EQ(qcow2_subcluster_type(&s, l2e, 0, 0),
		 QCOW2_CLUSTER_COMPRESSED);
	CHECK(!qcow2_l2_has_host(&s, l2e));
	CHECK_OK(qcow2_l2_decode(&s, l2e, 0, 0x50000, &e));
	CHECK(!e.has_host);
	CHECK_EQ(e.host, 0x30100);
	CHECK_EQ(e.clen, 3 * 512 - 0x100);
	/* An unaligned start: the length runs to the end of the sector. */
	CHECK_OK(qcow2_l2_decode(&s, QCOW2_OFLAG_COMPRESSED | 0x30123, 0, 0,
				 &e));
	CHECK_EQ(e.host, 0x30123);
	CHECK_EQ(e.clen, 512 - 0x123);
	/* Into the header cluster. */
	CHECK_ERR(qcow2_l2_validate(&s, QCOW2_OFLAG_COMPRESSED | 0x200, 0,
				    0x50000, false),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "header cluster");
	CHECK_STR_HAS(img_last_error(), "guest offset 0x50000");
	/* 512-byte clusters leave 61 offset bits: past the largest file
	 * offset (and off + len could overflow). */
	s = geom(9, false, false);
	CHECK_ERR(qcow2_l2_validate(&s,
				    QCOW2_OFLAG_COMPRESSED | ((1ull << 61) - 1),
				    0, 0, false),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "largest file offset");
}

static void test_bad_standard(void)
{
	struct qcow2 s = geom(16, false, false);
	struct qcow2_l2_entry e = { .l2e = 1 };

	/* Host offset not cluster aligned. */
	CHECK_ERR(qcow2_l2_decode(&s, 0x10200 | QCOW2_OFLAG_COPIED, 0, 0x70000,
				  &e),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "unaligned host offset 0x10200");
	CHECK_STR_HAS(img_last_error(), "guest offset 0x70000");
	/* Left untouched on failure. */
	CHECK_EQ(e.l2e, 1);
	/* 512-byte clusters: every sector-aligned offset is aligned. */
	s = geom(9, false, false);
	CHECK_OK(qcow2_l2_validate(&s, 0x10200 | QCOW2_OFLAG_COPIED, 0, 0,
				   false));
	/* Reserved bits (1-8, 56-61): QEMU reads them, check refuses them. */
	s = geom(16, false, false);
	CHECK_OK(qcow2_l2_validate(&s, 0x10000 | 0x2, 0, 0, false));
	CHECK_ERR(qcow2_l2_validate(&s, 0x10000 | 0x2, 0, 0, true),
		  -IMG_ECORRUPT);
	CHECK_STR_HAS(img_last_error(), "reserved bits");
	CHECK_ERR(qcow2_l2_validate(&s, 0x10000 | (1ull << 56), 0, 0, true),
		  -IMG_ECORRUPT);
	CHECK_OK(qcow2_l2_validate(
		&s, 0x10000 | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO, 0, 0,
		true));
	/* The largest host offset the entry can name is fine. */
	CHECK_OK(qcow2_l2_decode(&s, QCOW2_L2E_OFFSET_MASK & ~0xffffull, 0, 0,
				 &e));
	CHECK_EQ(e.host, 0x00ffffffffff0000ull);
}

int main(void)
{
	test_standard();
	test_data_file();
	test_extended();
	test_compressed();
	test_bad_standard();
	return test_done();
}
