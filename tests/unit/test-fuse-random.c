/* SPDX-License-Identifier: MIT */
/*
 * img-fuse against the real kernel: mounts qcow2 images with the img-fuse
 * next to this test's build directory and applies the same random operations
 * to MOUNTPOINT/disk and to a flat reference file: writes, reads compared
 * with the reference, punch-hole and zero-range fallocate, fsync, and
 * SEEK_DATA/SEEK_HOLE checked against the reference (a hole must read as
 * zeroes; data reported must exist). Offsets cluster around cluster and L2
 * table boundaries (512-byte clusters put an L2 boundary every 32 KiB) and
 * the end of the disk. After `img umount` the image must pass img_check
 * with no corruption and no leak and hold exactly the reference's bytes
 * (also checked with qemu-img compare when it is installed). Skips without
 * root, /dev/fuse or fusermount3. FUSE_SEED=N repeats a run.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

/* Operations per configuration; two configurations. */
#define N_OPS 6000
#define MAX_IO (192u << 10)

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: repeatable from FUSE_SEED */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ull;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

struct config {
	const char *name;
	uint64_t size;
	uint64_t cluster;
	uint64_t l2_span; /* guest bytes one L2 table maps */
	bool backing;
};

/* An offset near a cluster or L2 boundary, the end, or anywhere. */
static uint64_t pick_off(const struct config *c)
{
	uint64_t base, delta = rnd_below(2 * 1024) - 1024;

	switch (rnd_below(4)) {
	case 0:
		base = rnd_below(c->size / c->cluster) * c->cluster;
		break;
	case 1:
		base = rnd_below(c->size / c->l2_span + 1) * c->l2_span;
		break;
	case 2:
		base = c->size - rnd_below(3 * c->cluster);
		break;
	default:
		return rnd_below(c->size);
	}
	base += delta;
	return base >= c->size ? rnd_below(c->size) : base;
}

static uint64_t pick_len(const struct config *c, uint64_t off)
{
	uint64_t len;

	switch (rnd_below(3)) {
	case 0:
		len = 1 + rnd_below(600);
		break;
	case 1:
		len = c->cluster * (1 + rnd_below(4)) + rnd_below(3) - 1;
		break;
	default:
		len = 1 + rnd_below(MAX_IO);
	}
	if (len > c->size - off)
		len = c->size - off;
	return len ? len : 1;
}

static void fill_random(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rnd();

		memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
	}
}

static bool all_zero(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return false;
	return true;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  (off_t)(off + done));

		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
				   (off_t)(off + done));

		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* The reference's bytes [off, off + len) are all zero. */
static bool ref_zero(int ref, uint64_t off, uint64_t len, uint8_t *tmp)
{
	while (len) {
		size_t n = len > MAX_IO ? MAX_IO : (size_t)len;

		if (pread_full(ref, tmp, n, off) < 0 || !all_zero(tmp, n))
			return false;
		off += n;
		len -= n;
	}
	return true;
}

/* SEEK_DATA/SEEK_HOLE from off agree with the reference's contents. */
static void check_seek(int fd, int ref, const struct config *c, uint64_t off,
		       uint8_t *tmp)
{
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);
	off_t h = lseek(fd, (off_t)off, SEEK_HOLE);

	if (d < 0) {
		/* no data at or after off: all zero to the end */
		CHECK_EQ(errno, ENXIO);
		CHECK(ref_zero(ref, off, c->size - off, tmp));
	} else {
		CHECK((uint64_t)d >= off && (uint64_t)d < c->size);
		CHECK(ref_zero(ref, off, (uint64_t)d - off, tmp));
	}
	CHECK(h >= 0 && (uint64_t)h >= off && (uint64_t)h <= c->size);
	if (h >= 0 && (uint64_t)h < c->size) {
		off_t d2 = lseek(fd, h, SEEK_DATA);
		uint64_t end = d2 < 0 ? c->size : (uint64_t)d2;

		CHECK(end > (uint64_t)h);
		if (end - (uint64_t)h > 4 * MAX_IO)
			end = (uint64_t)h + 4 * MAX_IO;
		CHECK(ref_zero(ref, (uint64_t)h, end - (uint64_t)h, tmp));
	}
}

static void run_ops(int fd, int ref, const struct config *c)
{
	uint8_t *buf = malloc(MAX_IO + 8), *want = malloc(MAX_IO + 8);
	unsigned counts[6] = { 0 };

	for (int i = 0; i < N_OPS && tap_failures < 20; i++) {
		uint64_t off = pick_off(c), len = pick_len(c, off);
		unsigned op = (unsigned)rnd_below(100);

		if (len > MAX_IO)
			len = MAX_IO;
		if (op < 45) {
			fill_random(buf, len);
			CHECK(pwrite_full(fd, buf, len, off) == 0);
			CHECK(pwrite_full(ref, buf, len, off) == 0);
			counts[0]++;
		} else if (op < 80) {
			CHECK(pread_full(fd, buf, len, off) == 0);
			CHECK(pread_full(ref, want, len, off) == 0);
			if (memcmp(buf, want, len)) {
				tap_failures++;
				fprintf(stderr,
					"op %d: read %" PRIu64 "+%" PRIu64
					" differs from the reference\n",
					i, off, len);
			}
			counts[1]++;
		} else if (op < 88) {
			CHECK(fallocate(fd,
					FALLOC_FL_PUNCH_HOLE |
						FALLOC_FL_KEEP_SIZE,
					(off_t)off, (off_t)len) == 0);
			memset(buf, 0, len);
			CHECK(pwrite_full(ref, buf, len, off) == 0);
			counts[2]++;
		} else if (op < 94) {
			CHECK(fallocate(fd, FALLOC_FL_ZERO_RANGE, (off_t)off,
					(off_t)len) == 0);
			memset(buf, 0, len);
			CHECK(pwrite_full(ref, buf, len, off) == 0);
			counts[3]++;
		} else if (op < 97) {
			check_seek(fd, ref, c, off, buf);
			counts[4]++;
		} else {
			CHECK(fsync(fd) == 0);
			counts[5]++;
		}
	}
	test_note("%s: %u writes, %u reads, %u punches, %u zero ranges, "
		  "%u seeks, %u fsyncs",
		  c->name, counts[0], counts[1], counts[2], counts[3],
		  counts[4], counts[5]);
	free(buf);
	free(want);
}

/* The whole disk read through O_DIRECT equals the reference. */
static void check_direct_read(const char *disk, int ref, const struct config *c)
{
	void *a = NULL, *b = malloc(1 << 20);
	int fd = open(disk, O_RDONLY | O_DIRECT);

	CHECK(fd >= 0 && b);
	CHECK(posix_memalign(&a, 4096, 1 << 20) == 0);
	for (uint64_t off = 0; fd >= 0 && a && b && off + 4096 <= c->size;
	     off += 1 << 20) {
		size_t n = c->size - off < (1 << 20) ?
				   (size_t)((c->size - off) & ~4095ull) :
				   1 << 20;

		CHECK(pread(fd, a, n, (off_t)off) == (ssize_t)n);
		CHECK(pread_full(ref, b, n, off) == 0);
		if (memcmp(a, b, n)) {
			tap_failures++;
			fprintf(stderr,
				"%s: O_DIRECT read differs in MiB at %" PRIu64
				"\n",
				c->name, off);
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	free(a);
	free(b);
}

/*
 * DIRECT_JOBS processes write 4 KiB blocks through their own O_DIRECT
 * descriptors at once (the kernel may send them to img-fuse in parallel),
 * each to its own blocks (index % DIRECT_JOBS), and mirror them into the
 * reference; then the whole disk is read back through O_DIRECT.
 */
#define DIRECT_JOBS 4
#define DIRECT_WRITES 400

static void run_direct_writers(const char *disk, int ref,
			       const struct config *c)
{
	uint64_t blocks = c->size / 4096;
	pid_t pids[DIRECT_JOBS];
	int status;

	for (int j = 0; j < DIRECT_JOBS; j++) {
		pids[j] = fork();
		if (pids[j] == 0) {
			void *buf;
			int fd = open(disk, O_RDWR | O_DIRECT), bad = 0;

			rng_state += (uint64_t)j * 7919 + 1;
			if (fd < 0 || posix_memalign(&buf, 4096, 4096))
				_exit(2);
			for (int i = 0; i < DIRECT_WRITES; i++) {
				uint64_t b = rnd_below(blocks / DIRECT_JOBS) *
						     DIRECT_JOBS +
					     (uint64_t)j;

				fill_random(buf, 4096);
				if (pwrite(fd, buf, 4096, (off_t)(b * 4096)) !=
					    4096 ||
				    pwrite_full(ref, buf, 4096, b * 4096) < 0)
					bad = 1;
			}
			if (fsync(fd) != 0)
				bad = 1;
			_exit(bad);
		}
		CHECK(pids[j] > 0);
	}
	for (int j = 0; j < DIRECT_JOBS; j++)
		CHECK(pids[j] > 0 && waitpid(pids[j], &status, 0) == pids[j] &&
		      WIFEXITED(status) && WEXITSTATUS(status) == 0);
	check_direct_read(disk, ref, c);
	test_note("%s: %d O_DIRECT writers x %d writes", c->name, DIRECT_JOBS,
		  DIRECT_WRITES);
}

/* The image holds exactly the reference's bytes and checks clean. */
static void verify_image(const char *image, const char *refpath,
			 const struct config *c)
{
	struct img_open_opts o = { .flags = IMG_OPEN_RDONLY };
	struct img_check res = { 0 };
	uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
	struct img *img;
	int ref = open(refpath, O_RDONLY);

	CHECK_OK(img_open(image, &o, &img));
	if (tap_failures || ref < 0)
		goto out;
	CHECK_EQ(img_size(img), c->size);
	for (uint64_t off = 0; off < c->size; off += 1 << 20) {
		uint64_t n = c->size - off < (1 << 20) ? c->size - off :
							 1 << 20;

		CHECK_OK(img_read(img, a, off, n));
		CHECK(pread_full(ref, b, n, off) == 0);
		if (memcmp(a, b, n)) {
			tap_failures++;
			fprintf(stderr,
				"%s: image differs in MiB at %" PRIu64 "\n",
				c->name, off);
			break;
		}
	}
	CHECK_OK(img_check(img, 0, &res));
	CHECK_EQ(res.corruptions, 0);
	CHECK_EQ(res.leaks, 0);
	img_close(img);
	if (test_sh("command -v qemu-img >/dev/null") == 0)
		CHECK_EQ(test_sh("qemu-img compare -q -f raw -F qcow2 %s %s",
				 refpath, image),
			 0);
out:
	if (ref >= 0)
		close(ref);
	free(a);
	free(b);
}

static void run_config(const char *bindir, const struct config *c)
{
	char image[512], refpath[600], mnt[600], disk[700], base[700], opt[64];
	struct img_create_opts co = { .format = "qcow2", .size = c->size };
	struct img_kv kv = { "cluster_size", opt };
	int fd = -1, ref = -1;

	snprintf(image, sizeof(image), "%s", test_path(c->name));
	snprintf(refpath, sizeof(refpath), "%s.ref", image);
	snprintf(mnt, sizeof(mnt), "%s.mnt", image);
	snprintf(disk, sizeof(disk), "%s/disk", mnt);
	snprintf(opt, sizeof(opt), "%" PRIu64, c->cluster);
	co.opts = &kv;
	co.n_opts = 1;
	ref = open(refpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(ref >= 0 && ftruncate(ref, (off_t)c->size) == 0);
	if (c->backing) {
		/* A base with data in every other 40 KiB, copied into the
		 * reference: unallocated overlay ranges read through. */
		uint8_t *buf = malloc(40 << 10);
		int bfd;

		snprintf(base, sizeof(base), "%s.base", image);
		bfd = open(base, O_RDWR | O_CREAT | O_TRUNC, 0644);
		CHECK(bfd >= 0 && ftruncate(bfd, (off_t)c->size) == 0);
		for (uint64_t off = 0; off + (40 << 10) <= c->size;
		     off += 80 << 10) {
			fill_random(buf, 40 << 10);
			CHECK(pwrite_full(bfd, buf, 40 << 10, off) == 0);
			CHECK(pwrite_full(ref, buf, 40 << 10, off) == 0);
		}
		close(bfd);
		free(buf);
		co.backing_file = base;
		co.backing_fmt = "raw";
	}
	CHECK_OK(img_create(image, &co));
	CHECK(mkdir(mnt, 0755) == 0);
	if (tap_failures)
		goto out;
	if (test_sh("%s/img-fuse %s %s", bindir, image, mnt) != 0) {
		tap_failures++;
		fprintf(stderr, "img-fuse did not mount %s\n", image);
		goto out;
	}
	fd = open(disk, O_RDWR);
	CHECK(fd >= 0);
	if (fd >= 0) {
		struct stat st;

		CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == c->size);
		run_ops(fd, ref, c);
		CHECK(fsync(fd) == 0);
		close(fd);
		run_direct_writers(disk, ref, c);
	}
	CHECK_EQ(test_sh("%s/img umount %s", bindir, mnt), 0);
	verify_image(image, refpath, c);
out:
	test_sh("fusermount3 -u %s 2>/dev/null", mnt);
	if (ref >= 0)
		close(ref);
}

int main(int argc, char **argv)
{
	static const struct config configs[] = {
		/* 4 KiB clusters: an L2 table maps 2 MiB */
		{ "c4k.qcow2", (24u << 20) + 1536, 4096, 2u << 20, false },
		/* 512-byte clusters over a raw backing file: L2 every 32 KiB */
		{ "c512.qcow2", (6u << 20) + 512, 512, 32u << 10, true },
	};
	char bindir[600], *slash;
	const char *seed = getenv("FUSE_SEED");

	if (geteuid() != 0)
		test_skip("img-fuse tests need root (FUSE mounts)");
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		test_skip("no /dev/fuse");
	if (test_sh("command -v fusermount3 >/dev/null") != 0)
		test_skip("no fusermount3");
	/* this binary is BUILD/tests/test-fuse-random */
	snprintf(bindir, sizeof(bindir), "%s", argv[0]);
	slash = strrchr(bindir, '/');
	if (!slash)
		test_skip("run with a path to find BUILD/img-fuse");
	*slash = '\0';
	strncat(bindir, "/..", sizeof(bindir) - strlen(bindir) - 1);
	{
		char fuse_bin[700];

		snprintf(fuse_bin, sizeof(fuse_bin), "%s/img-fuse", bindir);
		if (access(fuse_bin, X_OK) != 0)
			test_skip("img-fuse not built");
	}
	rng_state = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL);
	if (!rng_state)
		rng_state = 1;
	test_note("FUSE_SEED=%" PRIu64, rng_state);
	for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
		run_config(bindir, &configs[i]);
	return test_done();
}
