/* SPDX-License-Identifier: MIT */
/*
 * qcow2 L2 entries as pure logic (QEMU docs/interop/qcow2.txt, "Standard
 * Cluster Descriptor", "Extended L2 Entries", "Compressed Clusters
 * Descriptor"): what a guest cluster or subcluster is (unallocated, zero,
 * preallocated zero, normal, compressed), where its host data lies, and
 * whether an entry read from an image is sane. No I/O and no state beyond
 * the image geometry, so that tests/unit/test-qcow2-l2.c can feed it
 * hand-built entries; the walk in qcow2-map.c is what turns a bad entry into
 * a corrupt image (qcow2_signal_corruption).
 */
#include <inttypes.h>

#include "qcow2.h"

bool qcow2_l2_has_host(const struct qcow2 *s, uint64_t l2e)
{
	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return false;
	if (l2e & QCOW2_L2E_OFFSET_MASK)
		return true;
	/* Offset 0 is a real offset in an external data file, whose
	 * clusters always have refcount 1: COPIED tells it apart. */
	return s->data_file != s->file && (l2e & QCOW2_OFLAG_COPIED);
}

enum qcow2_cluster_type qcow2_subcluster_type(const struct qcow2 *s,
					      uint64_t l2e, uint64_t bitmap,
					      unsigned sc)
{
	bool host;

	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_CLUSTER_COMPRESSED;
	host = qcow2_l2_has_host(s, l2e);
	if (!s->extended_l2) {
		if (l2e & QCOW2_OFLAG_ZERO)
			return host ? QCOW2_CLUSTER_ZERO_ALLOC :
				      QCOW2_CLUSTER_ZERO_PLAIN;
		return host ? QCOW2_CLUSTER_NORMAL : QCOW2_CLUSTER_UNALLOCATED;
	}
	if ((bitmap >> (32 + sc)) & 1)
		return host ? QCOW2_CLUSTER_ZERO_ALLOC :
			      QCOW2_CLUSTER_ZERO_PLAIN;
	if ((bitmap >> sc) & 1)
		return QCOW2_CLUSTER_NORMAL;
	return QCOW2_CLUSTER_UNALLOCATED;
}

uint64_t qcow2_l2_subcluster_mask(const struct qcow2 *s, uint64_t from,
				  uint64_t to)
{
	unsigned lo = (unsigned)(from >> s->subcluster_bits);
	unsigned hi = (unsigned)((to - 1) >> s->subcluster_bits);

	return ((hi == 31 ? QCOW2_EXTL2_ALLOC_MASK : (1ull << (hi + 1)) - 1) &
		~((1ull << lo) - 1));
}

static int validate_compressed(const struct qcow2 *s, uint64_t l2e,
			       uint64_t bitmap, uint64_t guest_off)
{
	uint64_t off, len;

	if (s->data_file != s->file)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: compressed cluster at guest offset %#" PRIx64
			" in an image with an external data file",
			guest_off);
	if (s->extended_l2 && bitmap)
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: compressed cluster at guest offset %#" PRIx64
			" has subcluster bitmap %#" PRIx64,
			guest_off, bitmap);
	if (qcow2_compressed_decode(s->cluster_bits, l2e, &off, &len) < 0)
		return img_error(-IMG_ECORRUPT,
				 "%s (guest offset %#" PRIx64 ")",
				 img_last_error(), guest_off);
	return 0;
}

int qcow2_l2_validate(const struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		      uint64_t guest_off, bool strict)
{
	uint64_t host = l2e & QCOW2_L2E_OFFSET_MASK;

	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return validate_compressed(s, l2e, bitmap, guest_off);
	/* QEMU reads entries with reserved bits set; only check says so. */
	if (strict && (l2e & QCOW2_L2E_STD_RESERVED))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: L2 entry %#" PRIx64
				 " for guest offset %#" PRIx64
				 " has reserved bits set",
				 l2e, guest_off);
	if (strict && s->extended_l2 && (l2e & QCOW2_OFLAG_ZERO))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: extended L2 entry %#" PRIx64
				 " for guest offset %#" PRIx64
				 " has the zero flag set",
				 l2e, guest_off);
	if (host & (s->cluster_size - 1))
		return img_error(-IMG_ECORRUPT,
				 "qcow2: L2 entry for guest offset %#" PRIx64
				 " has unaligned host offset %#" PRIx64,
				 guest_off, host);
	if (!s->extended_l2)
		return 0;
	if (bitmap & (bitmap >> 32) & QCOW2_EXTL2_ALLOC_MASK)
		return img_error(-IMG_ECORRUPT,
				 "qcow2: invalid subcluster bitmap %#" PRIx64
				 " at guest offset %#" PRIx64,
				 bitmap, guest_off);
	if ((bitmap & QCOW2_EXTL2_ALLOC_MASK) && !qcow2_l2_has_host(s, l2e))
		return img_error(
			-IMG_ECORRUPT,
			"qcow2: allocated subclusters without a host cluster at guest offset %#" PRIx64,
			guest_off);
	return 0;
}

int qcow2_l2_decode(const struct qcow2 *s, uint64_t l2e, uint64_t bitmap,
		    uint64_t guest_off, struct qcow2_l2_entry *e)
{
	int ret = qcow2_l2_validate(s, l2e, bitmap, guest_off, false);

	if (ret < 0)
		return ret;
	*e = (struct qcow2_l2_entry){ .l2e = l2e, .bitmap = bitmap };
	if (l2e & QCOW2_OFLAG_COMPRESSED)
		return qcow2_compressed_decode(s->cluster_bits, l2e, &e->host,
					       &e->clen);
	e->has_host = qcow2_l2_has_host(s, l2e);
	if (e->has_host)
		e->host = l2e & QCOW2_L2E_OFFSET_MASK;
	return 0;
}

enum qcow2_cluster_type qcow2_l2_type_at(const struct qcow2 *s,
					 const struct qcow2_l2_entry *e,
					 uint64_t in_cluster)
{
	return qcow2_subcluster_type(s, e->l2e, e->bitmap,
				     (unsigned)(in_cluster >>
						s->subcluster_bits));
}
