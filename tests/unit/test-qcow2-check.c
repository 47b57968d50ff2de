/* SPDX-License-Identifier: MIT */
/*
 * qcow2 check, repair and measure against qemu-img 7.2: images made by
 * qemu-img/qemu-io are corrupted in known ways (a leaked cluster, a dropped
 * refcount, an unaligned L2 entry, wrong COPIED flags, reserved bits, a data
 * cluster past the end of the file, a dirty lazy-refcounts image), then
 * `qemu-img check` and img_check run on two copies of the same file and must
 * report the same counts, without and with repair; after img's repair
 * `qemu-img check` must find the image clean. Measure is compared with
 * `qemu-img measure` for several geometries, with and without a source.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "qcow2-testlib.h"

/* Paths in the test directory (test_path's slots rotate). */
static char p_base[512], p_t[512], p_q[512], p_m[512], p_src[512], p_raw[512];

static void paths_init(void)
{
	snprintf(p_base, sizeof(p_base), "%s", test_path("base.qcow2"));
	snprintf(p_t, sizeof(p_t), "%s", test_path("t.qcow2"));
	snprintf(p_q, sizeof(p_q), "%s", test_path("q.qcow2"));
	snprintf(p_m, sizeof(p_m), "%s", test_path("m.qcow2"));
	snprintf(p_src, sizeof(p_src), "%s", test_path("src.qcow2"));
	snprintf(p_raw, sizeof(p_raw), "%s", test_path("src.raw"));
}

/* ---- poking at a qcow2 file (16-bit refcounts, normal L2 entries) ---- */

#define OFFSET_MASK 0x00fffffffffffe00ull
#define OFLAG_COPIED (1ull << 63)

struct qf {
	int fd;
	uint64_t cs, l1_off, rt_off;
};

static uint64_t rd64(int fd, uint64_t off)
{
	uint8_t b[8] = { 0 };

	if (pread(fd, b, 8, (off_t)off) != 8)
		return 0;
	return img_be64(b);
}

static void wr64(int fd, uint64_t off, uint64_t v)
{
	uint8_t b[8];

	img_put_be64(b, v);
	CHECK(pwrite(fd, b, 8, (off_t)off) == 8);
}

static bool qf_open(struct qf *f, const char *path)
{
	uint8_t h[104];

	f->fd = open(path, O_RDWR);
	if (f->fd < 0 || pread(f->fd, h, sizeof(h), 0) != sizeof(h))
		return false;
	f->cs = 1ull << img_be32(h + 20);
	f->l1_off = img_be64(h + 40);
	f->rt_off = img_be64(h + 48);
	return img_be32(h + 96) == 4;
}

/* Add delta to the stored refcount of host cluster k. */
static void qf_addrc(struct qf *f, uint64_t k, int delta)
{
	uint64_t per = f->cs / 2;
	uint64_t rb = rd64(f->fd, f->rt_off + 8 * (k / per));
	uint64_t off = rb + 2 * (k % per);
	uint8_t b[2] = { 0 };

	CHECK(rb != 0);
	CHECK(pread(f->fd, b, 2, (off_t)off) == 2);
	img_put_be16(b, (uint16_t)(img_be16(b) + delta));
	CHECK(pwrite(f->fd, b, 2, (off_t)off) == 2);
}

/* XOR the L2 entry of guest cluster g (or the L1 entry idx) with x. */
static void qf_xor_l2(struct qf *f, uint64_t g, uint64_t x)
{
	uint64_t per = f->cs / 8;
	uint64_t l2 = rd64(f->fd, f->l1_off + 8 * (g / per)) & OFFSET_MASK;
	uint64_t off = l2 + 8 * (g % per);

	CHECK(l2 != 0);
	wr64(f->fd, off, rd64(f->fd, off) ^ x);
}

static void qf_xor_l1(struct qf *f, uint64_t idx, uint64_t x)
{
	uint64_t off = f->l1_off + 8 * idx;

	wr64(f->fd, off, rd64(f->fd, off) ^ x);
}

/* Host cluster index of guest cluster g's data. */
static uint64_t qf_host(struct qf *f, uint64_t g)
{
	uint64_t per = f->cs / 8;
	uint64_t l2 = rd64(f->fd, f->l1_off + 8 * (g / per)) & OFFSET_MASK;

	return (rd64(f->fd, l2 + 8 * (g % per)) & OFFSET_MASK) / f->cs;
}

/* ---- qemu-img check --output=json ---- */

struct counts {
	long long corruptions, leaks, check_errors, corruptions_fixed,
		leaks_fixed, image_end_offset, total, allocated, fragmented,
		compressed;
	int rc;
};

static long long json_num(const char *js, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	return p ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

static void qemu_check(const char *path, const char *fix, struct counts *c)
{
	char js[8192] = "";
	const char *out = test_path("qemu.json");
	FILE *f;
	size_t n;

	c->rc = test_sh(
		"qemu-img check %s%s --output=json '%s' >'%s' 2>/dev/null",
		fix ? "-r " : "", fix ? fix : "", path, out);
	f = fopen(out, "r");
	if (f) {
		n = fread(js, 1, sizeof(js) - 1, f);
		js[n] = 0;
		fclose(f);
	}
	c->corruptions = json_num(js, "corruptions");
	c->leaks = json_num(js, "leaks");
	c->check_errors = json_num(js, "check-errors");
	c->corruptions_fixed = json_num(js, "corruptions-fixed");
	c->leaks_fixed = json_num(js, "leaks-fixed");
	c->image_end_offset = json_num(js, "image-end-offset");
	c->total = json_num(js, "total-clusters");
	c->allocated = json_num(js, "allocated-clusters");
	c->fragmented = json_num(js, "fragmented-clusters");
	c->compressed = json_num(js, "compressed-clusters");
}

static void note_line(void *opaque, const char *line)
{
	(void)opaque;
	test_note("img: %s", line);
}

static int img_check_file(const char *path, unsigned flags, struct counts *c)
{
	struct img_open_opts o = {
		.format = "qcow2",
		.flags = IMG_OPEN_NO_REPAIR | IMG_OPEN_NO_BACKING |
			 (flags ? 0 : IMG_OPEN_RDONLY),
	};
	struct img_check r = { .report = note_line };
	struct img *img;
	int ret;

	memset(c, 0, sizeof(*c));
	ret = img_open(path, &o, &img);
	if (ret < 0) {
		test_note("open %s: %s", path, img_last_error());
		return ret;
	}
	ret = img_check(img, flags, &r);
	if (ret < 0)
		test_note("check %s: %s", path, img_last_error());
	CHECK_OK(img_close(img));
	c->corruptions = (long long)r.corruptions;
	c->leaks = (long long)r.leaks;
	c->check_errors = (long long)r.check_errors;
	c->corruptions_fixed = (long long)r.corruptions_fixed;
	c->leaks_fixed = (long long)r.leaks_fixed;
	c->image_end_offset = (long long)r.image_end_offset;
	c->total = (long long)r.total_clusters;
	c->allocated = (long long)r.allocated_clusters;
	c->fragmented = (long long)r.fragmented_clusters;
	c->compressed = (long long)r.compressed_clusters;
	return ret;
}

/*
 * Check copies of path with qemu-img and img (fix: NULL, "leaks" or "all")
 * and compare. After a repair qemu-img reports the counts of a second check
 * of the repaired image, except for the *_fixed counts: compare those, and
 * require the image img repaired to pass `qemu-img check`.
 */
static void compare(const char *name, const char *path, const char *fix,
		    bool same_end)
{
	const char *q = p_q, *m = p_m;
	unsigned flags = 0;
	struct counts qc, mc;
	int ret;

	test_note("case %s, repair %s", name, fix ? fix : "none");
	CHECK_EQ(test_sh("cp '%s' '%s' && cp '%s' '%s'", path, q, path, m), 0);
	if (fix)
		flags = !strcmp(fix, "all") ?
				IMG_CHECK_FIX_LEAKS | IMG_CHECK_FIX_ERRORS :
				IMG_CHECK_FIX_LEAKS;
	qemu_check(q, fix, &qc);
	ret = img_check_file(m, flags, &mc);
	if (qc.rc == 1) {
		/* qemu-img could not complete (e.g. -r leaks needing a
		 * rebuild): img must fail too. */
		CHECK(ret < 0 || mc.check_errors > 0);
		return;
	}
	CHECK_OK(ret);
	CHECK_EQ(mc.check_errors, qc.check_errors);
	CHECK_EQ(mc.total, qc.total);
	CHECK_EQ(mc.allocated, qc.allocated);
	CHECK_EQ(mc.fragmented, qc.fragmented);
	CHECK_EQ(mc.compressed, qc.compressed);
	if (!fix) {
		CHECK_EQ(mc.corruptions, qc.corruptions);
		CHECK_EQ(mc.leaks, qc.leaks);
		CHECK_EQ(mc.image_end_offset, qc.image_end_offset);
		return;
	}
	CHECK_EQ(mc.corruptions_fixed, qc.corruptions_fixed);
	CHECK_EQ(mc.leaks_fixed, qc.leaks_fixed);
	/* Recheck both repaired images with qemu-img and with img. */
	qemu_check(q, NULL, &qc);
	CHECK_OK(img_check_file(m, 0, &mc));
	CHECK_EQ(mc.corruptions, qc.corruptions);
	CHECK_EQ(mc.leaks, qc.leaks);
	if (same_end)
		CHECK_EQ(mc.image_end_offset, qc.image_end_offset);
	qemu_check(m, NULL, &qc);
	CHECK_EQ(qc.corruptions, mc.corruptions);
	CHECK_EQ(qc.leaks, 0);
	CHECK_EQ(qc.check_errors, 0);
	/* The data survived the repair. */
	if (!mc.corruptions)
		CHECK_EQ(test_sh("qemu-img compare -q '%s' '%s'", q, m), 0);
}

static void compare_all(const char *name, const char *path, bool same_end)
{
	compare(name, path, NULL, true);
	compare(name, path, "leaks", same_end);
	compare(name, path, "all", same_end);
}

static void test_check(void)
{
	const char *base = p_base, *t = p_t;
	struct qf f;

	CHECK_EQ(
		test_sh("qemu-img create -q -f qcow2 '%s' 64M && "
			"qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 10M 300k' "
			"-c 'write 40M 64k' '%s' >/dev/null",
			base, base),
		0);
	compare_all("clean", base, true);

#define CASE(name, same_end, body)                             \
	do {                                                   \
		CHECK_EQ(test_sh("cp '%s' '%s'", base, t), 0); \
		CHECK(qf_open(&f, t));                         \
		body;                                          \
		close(f.fd);                                   \
		compare_all(name, t, same_end);                \
	} while (0)

	CASE("leaked cluster", true, qf_addrc(&f, qf_host(&f, 2), 1));
	CASE("refcount +2", true, qf_addrc(&f, qf_host(&f, 3), 2));
	/* A rebuild places the new structures past the end of the file where
	 * QEMU reuses holes: image end offsets differ after repair. */
	CASE("dropped refcount", false, qf_addrc(&f, qf_host(&f, 4), -1));
	CASE("unaligned l2 entry", true, qf_xor_l2(&f, 3, 0x200));
	CASE("copied flags", true, {
		qf_xor_l2(&f, 2, OFLAG_COPIED);
		qf_xor_l1(&f, 0, OFLAG_COPIED);
	});
	CASE("reserved bits", true, {
		qf_xor_l2(&f, 5, 1ull << 56);
		qf_xor_l1(&f, 0, 1ull << 56);
	});
	CASE("past end of file", true, qf_xor_l2(&f, 4, 0x10000000));
#undef CASE

	/* Snapshots share clusters (refcount 2, COPIED clear). */
	CHECK_EQ(test_sh("cp '%s' '%s' && qemu-img snapshot -c s1 '%s' && "
			 "qemu-io -c 'write -P 9 0 128k' '%s' >/dev/null && "
			 "qemu-img snapshot -c s2 '%s'",
			 base, t, t, t, t),
		 0);
	compare_all("snapshots", t, true);
	CHECK(qf_open(&f, t));
	qf_addrc(&f, qf_host(&f, 5), -1);
	close(f.fd);
	compare_all("snapshot refcount dropped", t, true);

	/* Compressed clusters, 4 KiB clusters, extended L2, refcount widths,
	 * v2, a data file, bitmaps. */
	CHECK_EQ(test_sh("qemu-img convert -c -O qcow2 -o cluster_size=4k "
			 "'%s' '%s'",
			 base, t),
		 0);
	compare_all("compressed", t, true);
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 -o extended_l2=on,"
			 "refcount_bits=1 '%s' 64M && qemu-io -c "
			 "'write -P 1 0 4k' -c 'write 1M 100k' -c "
			 "'write -z 5M 64k' '%s' >/dev/null",
			 t, t),
		 0);
	compare_all("extended l2", t, true);
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 -o compat=0.10,"
			 "cluster_size=512 '%s' 4M && qemu-io -c "
			 "'write -P 1 0 4k' -c 'write 1M 100k' '%s' >/dev/null",
			 t, t),
		 0);
	compare_all("v2 512-byte clusters", t, true);
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 -o refcount_bits=64 '%s' "
			 "64M && qemu-io -c 'write 1M 100k' '%s' >/dev/null && "
			 "qemu-img bitmap --add '%s' b0",
			 t, t, t),
		 0);
	/* Only read-only: a read-write open by img clears the bitmaps
	 * autoclear bit (no bitmap support yet), so qemu-img then sees the
	 * bitmap clusters as leaked. */
	compare("bitmaps, 64-bit refcounts", t, NULL, true);

	/* A dirty image with lazy refcounts: qemu-io killed mid-way. */
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on "
			 "'%s' 64M && (qemu-io -c 'write -P 1 0 1M' -c "
			 "'write 3M 64k' -c 'sigraise 9' '%s' >/dev/null "
			 "2>&1; true)",
			 t, t),
		 0);
	compare("dirty lazy refcounts", t, NULL, true);
	compare("dirty lazy refcounts", t, "all", false);
}

/* ---- measure ---- */

static void qemu_measure(const char *args, uint64_t *req, uint64_t *full)
{
	const char *out = test_path("measure.txt");
	char line[256];
	FILE *f;

	*req = *full = 0;
	CHECK_EQ(test_sh("qemu-img measure -O qcow2 %s >'%s'", args, out), 0);
	f = fopen(out, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v;

		if (sscanf(line, "required size: %llu", &v) == 1)
			*req = v;
		else if (sscanf(line, "fully allocated size: %llu", &v) == 1)
			*full = v;
	}
	fclose(f);
}

static void measure_one(const char *opts, uint64_t size, const char *src)
{
	struct img_create_opts o = { .format = "qcow2",
				     .size = src ? 0 : size };
	struct img_open_opts so = { .flags = IMG_OPEN_RDONLY };
	struct img_kv *kv = NULL;
	struct img_measure m = { 0 };
	struct img *s = NULL;
	char args[1024];
	uint64_t req, full;
	size_t n = 0;

	if (src)
		snprintf(args, sizeof(args), "%s%s '%s'", *opts ? "-o " : "",
			 opts, src);
	else
		snprintf(args, sizeof(args), "%s%s --size %" PRIu64,
			 *opts ? "-o " : "", opts, size);
	qemu_measure(args, &req, &full);
	if (*opts)
		CHECK_OK(img_kv_parse(opts, &kv, &n));
	o.opts = kv;
	o.n_opts = n;
	if (src)
		CHECK_OK(img_open(src, &so, &s));
	CHECK_OK(img_measure(&o, s, &m));
	if (m.required != req || m.fully_allocated != full)
		test_note("measure %s: qemu %" PRIu64 "/%" PRIu64
			  ", img %" PRIu64 "/%" PRIu64,
			  args, req, full, m.required, m.fully_allocated);
	CHECK_EQ(m.required, req);
	CHECK_EQ(m.fully_allocated, full);
	img_close(s);
	img_kv_free(kv, n);
}

static void test_measure(void)
{
	static const char *const opts[] = {
		"",
		"cluster_size=4k",
		"cluster_size=512",
		"cluster_size=2M",
		"extended_l2=on",
		"refcount_bits=1,cluster_size=4k",
		"compat=0.10",
		"preallocation=full",
		"preallocation=metadata",
	};
	static const uint64_t sizes[] = {
		0, 1, 1234567, 64ull << 20, 10ull << 30, 1ull << 40
	};
	const char *src = p_src, *raw = p_raw;

	for (size_t i = 0; i < IMG_ARRAY_SIZE(opts); i++)
		for (size_t j = 0; j < IMG_ARRAY_SIZE(sizes); j++) {
			if (sizes[j] >= (1ull << 40) && strstr(opts[i], "=512"))
				continue;
			measure_one(opts[i], sizes[j], NULL);
		}
	CHECK_EQ(test_sh("qemu-img create -q -f qcow2 '%s' 100M && qemu-io -c "
			 "'write -P 1 0 1M' -c 'write -P 2 10M 300k' -c "
			 "'write -z 20M 1M' -c 'write 50M 4k' -c "
			 "'write 99M 1k' '%s' >/dev/null",
			 src, src),
		 0);
	measure_one("", 0, src);
	measure_one("cluster_size=4k", 0, src);
	measure_one("cluster_size=2M", 0, src);
	measure_one("backing_file=/nonexistent", 0, src);
	CHECK_EQ(test_sh("head -c 3000000 /dev/urandom >'%s'", raw), 0);
	measure_one("", 0, raw);
	measure_one("cluster_size=4k", 0, raw);
}

int main(void)
{
	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");
	if (!qt_have_qemu_img() ||
	    system("command -v qemu-io >/dev/null 2>&1") != 0)
		test_skip("qemu-img or qemu-io not installed");
	paths_init();
	test_check();
	test_measure();
	return test_done();
}
