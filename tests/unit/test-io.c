/* SPDX-License-Identifier: MIT */
/*
 * Tests for the host-file I/O layer: every backend (mem, psync, io_uring, and
 * psync/io_uring with O_DIRECT) runs the same random reads, writes, zeroes,
 * batches and truncates against a flat reference buffer, with unaligned
 * offsets and lengths and reads past the end; then the wrappers' argument
 * checks and messages, extents of a sparse file, AUTO's choice and several
 * threads sharing one io_uring file.
 */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "internal.h"
#include "tap.h"

#define REF_SIZE (3u << 20)

static uint8_t *ref;
static uint64_t ref_len;
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* An offset or length that is usually unaligned, sometimes 4 KiB aligned. */
static uint64_t rnd_upto(uint64_t max)
{
	uint64_t v = rnd() % max;

	if (rnd() % 4 == 0)
		v &= ~4095ull;
	return v;
}

static void fill(uint8_t *p, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		p[i] = (uint8_t)(rnd() | 1);
}

static void check_contents(struct img_io *io, const char *what)
{
	uint64_t size = 0;
	uint8_t *buf = malloc(REF_SIZE + 8192);
	int ret;

	CHECK_OK(img_io_size(io, &size));
	CHECK_EQ(size, ref_len);
	/* Read through the end, from an unaligned buffer address. */
	ret = img_io_pread(io, buf + 3, ref_len + 5000, 0);
	CHECK_OK(ret);
	if (ret >= 0) {
		bool same = !memcmp(buf + 3, ref, ref_len) &&
			    img_is_zero(buf + 3 + ref_len, 5000);

		if (!same)
			fprintf(stderr, "contents differ after %s\n", what);
		CHECK(same);
	}
	free(buf);
}

static void model_write(uint64_t off, const uint8_t *data, uint64_t len)
{
	if (data)
		memcpy(ref + off, data, len);
	else
		memset(ref + off, 0, len);
	if (off + len > ref_len)
		ref_len = off + len;
}

static void test_backend(struct img_io *io, const char *name)
{
	uint8_t *data = malloc(REF_SIZE), *buf = malloc(REF_SIZE + 4096);
	struct img_io_vec v[100];
	uint64_t size;

	test_note("backend %s (%s)", name, io->ops->name);
	memset(ref, 0, REF_SIZE);
	ref_len = 0;
	CHECK_OK(img_io_truncate(io, 0));

	/* Random writes and reads; some cross the 1 MiB bounce chunk. */
	for (int i = 0; i < 60; i++) {
		uint64_t len = 1 + rnd_upto(i % 10 == 0 ? (1u << 21) : 20000);
		uint64_t off = rnd_upto(REF_SIZE - len);
		uint64_t misalign = rnd() % 4;

		if (rnd() % 3) {
			fill(data + misalign, len);
			CHECK_OK(img_io_pwrite(io, data + misalign, len, off));
			model_write(off, data + misalign, len);
		} else {
			CHECK_OK(img_io_pread(io, buf + misalign, len, off));
			for (uint64_t j = 0; j < len; j++) {
				uint8_t want =
					off + j < ref_len ? ref[off + j] : 0;

				if (buf[misalign + j] != want) {
					fprintf(stderr,
						"%s: read at %#" PRIx64
						"+%" PRIu64
						" differs at %" PRIu64 "\n",
						name, off, len, j);
					CHECK(0);
					break;
				}
			}
		}
	}
	check_contents(io, "random writes");

	/* Zero in the middle, with and without punch, and past the end. */
	CHECK_OK(img_io_zero(io, 1000, 70000, 0));
	model_write(1000, NULL, 70000);
	CHECK_OK(img_io_zero(io, 200001, 300007, IMG_IO_ZERO_PUNCH));
	model_write(200001, NULL, 300007);
	CHECK_OK(img_io_zero(io, ref_len - 10, 8200, IMG_IO_ZERO_PUNCH));
	model_write(ref_len - 10, NULL, 8200);
	check_contents(io, "zero");

	/* Truncate down (unaligned) and back up: the tail reads as zeroes. */
	CHECK_OK(img_io_truncate(io, 1234567));
	ref_len = 1234567;
	memset(ref + ref_len, 0, REF_SIZE - ref_len);
	check_contents(io, "shrink");
	CHECK_OK(img_io_truncate(io, 2000000));
	memset(ref + 1234567, 0, 2000000 - 1234567);
	ref_len = 2000000;
	check_contents(io, "grow");

	/* A write past the end of an unaligned-size file. */
	fill(data, 777);
	CHECK_OK(img_io_pwrite(io, data, 777, 2000000 + 5));
	model_write(2000000 + 5, data, 777);
	check_contents(io, "append");

	/* A batch of 100 writes, then 100 reads of the same ranges. */
	for (unsigned i = 0; i < 100; i++) {
		v[i].len = i % 2 ? 4096 : 1 + rnd() % 9000;
		v[i].file_off = i % 2 ? (uint64_t)i * 24576 :
					(uint64_t)i * 24576 + rnd() % 3000;
		v[i].buf = data + i * 12000 + (i % 2 ? 0 : rnd() % 7);
		v[i].write = true;
		if (i == 50)
			v[i].len = 0;
		fill(v[i].buf, v[i].len);
		model_write(v[i].file_off, v[i].buf, v[i].len);
	}
	CHECK_OK(img_io_submit(io, v, 100));
	check_contents(io, "batch write");
	for (unsigned i = 0; i < 100; i++) {
		v[i].write = false;
		v[i].buf = buf + (uint64_t)i * 12000 + i % 5;
	}
	/* One read reaches past the end of the file. */
	v[99].file_off = ref_len - 100;
	v[99].len = 4000;
	memset(buf, 0xaa, REF_SIZE);
	CHECK_OK(img_io_submit(io, v, 100));
	for (unsigned i = 0; i < 100; i++) {
		uint64_t n = v[i].len;
		uint64_t in = v[i].file_off >= ref_len ?
				      0 :
				      img_min(n, ref_len - v[i].file_off);

		CHECK(!memcmp(v[i].buf, ref + v[i].file_off, in));
		CHECK(img_is_zero((uint8_t *)v[i].buf + in, n - in));
	}

	CHECK_OK(img_io_flush(io));
	CHECK_OK(img_io_size(io, &size));
	CHECK_EQ(size, ref_len);
	free(data);
	free(buf);
}

static void test_sparse_extents(struct img_io *io)
{
	uint8_t buf[65536];
	uint64_t len = 0, bytes = 0;
	bool data = true;

	CHECK_OK(img_io_truncate(io, 0));
	memset(buf, 7, sizeof(buf));
	CHECK_OK(img_io_pwrite(io, buf, sizeof(buf), 1 << 20));
	CHECK_OK(img_io_truncate(io, 4 << 20));
	CHECK_OK(img_io_extent(io, 0, 4 << 20, &data, &len));
	if (data && len == 4 << 20) {
		test_note("%s: no SEEK_HOLE support here", io->ops->name);
		return;
	}
	CHECK(!data);
	CHECK_EQ(len, 1 << 20);
	CHECK_OK(img_io_extent(io, 1 << 20, 4 << 20, &data, &len));
	CHECK(data);
	CHECK(len >= 65536 && len < (3 << 20));
	CHECK_OK(img_io_extent(io, 3 << 20, 1 << 20, &data, &len));
	CHECK(!data);
	CHECK_EQ(len, 1 << 20);
	/* Past the end of the file: a hole. */
	CHECK_OK(img_io_extent(io, 8 << 20, 4096, &data, &len));
	CHECK(!data);
	CHECK_EQ(len, 4096);
	CHECK_OK(img_io_allocated(io, &bytes));
	CHECK(bytes >= 65536 && bytes < (1 << 20));
	/* Punching the data makes it a hole again. */
	if (img_io_zero(io, 1 << 20, 65536, IMG_IO_ZERO_PUNCH) >= 0) {
		CHECK_OK(img_io_extent(io, 0, 4 << 20, &data, &len));
		CHECK(!data);
		CHECK_EQ(len, 4 << 20);
	}
	/* Preallocation reserves blocks (which may still read as a hole:
	 * unwritten extents) without changing the size. */
	if (img_io_allocate(io, 0, 1 << 20) >= 0) {
		CHECK_OK(img_io_allocated(io, &bytes));
		CHECK(bytes >= 1 << 20);
		CHECK_OK(img_io_size(io, &len));
		CHECK_EQ(len, 4 << 20);
	}
}

static void test_wrappers(void)
{
	struct img_io *io;
	uint8_t buf[4096];
	bool data;
	uint64_t len;

	CHECK_OK(img_io_mem_new("abc", 3, &io));
	/* Zero-length requests are no-ops, even at absurd offsets. */
	CHECK_OK(img_io_pread(io, buf, 0, UINT64_MAX));
	CHECK_OK(img_io_pwrite(io, buf, 0, UINT64_MAX));
	CHECK_ERR(img_io_pread(io, buf, 10, UINT64_MAX - 5), -EINVAL);
	CHECK_ERR(img_io_pwrite(io, buf, 10, 1ull << 63), -EINVAL);
	CHECK_ERR(img_io_zero(io, INT64_MAX, 2, 0), -EINVAL);
	CHECK_ERR(img_io_truncate(io, UINT64_MAX), -EINVAL);
	/* mem: extents are all data, allocate unsupported. */
	CHECK_OK(img_io_extent(io, 0, 100, &data, &len));
	CHECK(data);
	CHECK_EQ(len, 100);
	CHECK_ERR(img_io_allocate(io, 0, 100), -ENOTSUP);
	CHECK_OK(img_io_allocated(io, &len));
	CHECK_EQ(len, 3);
	CHECK_OK(img_io_pread(io, buf, 5, 0));
	CHECK(!memcmp(buf, "abc\0\0", 5));
	img_io_close(io);
	img_io_close(NULL);

	/* A read-only file refuses writes; a failed read names the file. */
	CHECK_OK(img_io_open(test_tmpdir(), IMG_IO_RDONLY, IMG_IO_PSYNC, &io));
	CHECK_ERR(img_io_pwrite(io, buf, 1, 0), -EROFS);
	CHECK_ERR(img_io_pread(io, buf, 4096, 0x1000), -EISDIR);
	CHECK_STR_HAS(img_last_error(),
		      "io: pread of 4096 bytes at 0x1000 in '");
	CHECK_STR_HAS(img_last_error(), test_tmpdir());
	img_io_close(io);

	CHECK_ERR(img_io_open(test_path("missing"), 0, IMG_IO_PSYNC, &io),
		  -ENOENT);
	CHECK_STR_HAS(img_last_error(), "missing");
}

struct thread_arg {
	struct img_io *io;
	unsigned idx;
	int fails;
};

static void *thread_main(void *p)
{
	struct thread_arg *a = p;
	uint8_t w[8192], r[8192];

	for (unsigned i = 0; i < 200; i++) {
		uint64_t off = ((uint64_t)a->idx * 200 + i) * 8192 + 17;

		memset(w, (int)(a->idx * 31 + i), sizeof(w));
		if (img_io_pwrite(a->io, w, sizeof(w), off) < 0 ||
		    img_io_pread(a->io, r, sizeof(r), off) < 0 ||
		    memcmp(w, r, sizeof(w)))
			a->fails++;
	}
	return NULL;
}

static void test_threads(struct img_io *io)
{
	pthread_t t[4];
	struct thread_arg a[4];

	for (unsigned i = 0; i < 4; i++) {
		a[i] = (struct thread_arg){ .io = io, .idx = i };
		CHECK(pthread_create(&t[i], NULL, thread_main, &a[i]) == 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ(a[i].fails, 0);
	}
}

static void run_file(const char *name, unsigned flags, enum img_io_kind kind)
{
	struct img_io *io;
	int ret =
		img_io_open(test_path(name), flags | IMG_IO_CREATE, kind, &io);

	if (ret < 0) {
		if (kind == IMG_IO_URING && ret == -ENOSYS) {
			test_note("skipping %s: %s", name, img_last_error());
			return;
		}
		if ((flags & IMG_IO_DIRECT) && ret == -EINVAL) {
			test_note("skipping %s: %s", name, img_last_error());
			return;
		}
		CHECK_OK(ret);
		return;
	}
	test_backend(io, name);
	test_sparse_extents(io);
	/* Every backend: io_uring keeps a ring per thread, psync is what
	 * the threads of a pool share where no ring can be set up. */
	test_threads(io);
	img_io_close(io);
}

/* In a child where io_uring_setup fails (as under a container's seccomp
 * policy): AUTO falls back to psync silently, URING fails -ENOSYS. The
 * parent's ring, if any, must not leak into the child. */
static int child_without_uring(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { IMG_ARRAY_SIZE(filter), filter };
	struct img_io *io;
	uint8_t buf[100];

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return 77;
	CHECK_ERR(img_io_open(test_path("noring"), IMG_IO_CREATE, IMG_IO_URING,
			      &io),
		  -ENOSYS);
	CHECK_STR_HAS(img_last_error(), "io_uring");
	CHECK_OK(img_io_open(test_path("noring"), IMG_IO_CREATE, IMG_IO_AUTO,
			     &io));
	if (tap_failures)
		return 1;
	CHECK_STR_HAS(io->ops->name, "psync");
	memset(buf, 3, sizeof(buf));
	CHECK_OK(img_io_pwrite(io, buf, sizeof(buf), 10));
	CHECK_OK(img_io_pread(io, buf, sizeof(buf), 0));
	CHECK(img_is_zero(buf, 10) && buf[10] == 3);
	img_io_close(io);
	return tap_failures ? 1 : 0;
}

static void test_no_uring(void)
{
	int st;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0)
		_exit(child_without_uring());
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		test_note("seccomp unavailable: io_uring fallback not tested");
	else
		CHECK_EQ(WEXITSTATUS(st), 0);
}

int main(void)
{
	struct img_io *io;

	ref = malloc(REF_SIZE);
	if (!ref)
		return 1;

	CHECK_OK(img_io_mem_new(NULL, 0, &io));
	test_backend(io, "mem");
	img_io_close(io);

	run_file("psync", 0, IMG_IO_PSYNC);
	run_file("uring", 0, IMG_IO_URING);
	run_file("psync-direct", IMG_IO_DIRECT, IMG_IO_PSYNC);
	run_file("uring-direct", IMG_IO_DIRECT, IMG_IO_URING);

	/* AUTO gives io_uring exactly when an explicit io_uring open works. */
	if (img_io_open(test_path("auto"), IMG_IO_CREATE, IMG_IO_AUTO, &io) >=
	    0) {
		struct img_io *u;
		/* Shared: the first opening's image lock keeps writers out. */
		int ret = img_io_open(test_path("auto"),
				      IMG_IO_RDONLY | IMG_IO_SHARED,
				      IMG_IO_URING, &u);

		CHECK_STR_HAS(io->ops->name, ret >= 0 ? "io_uring" : "psync");
		test_note("auto chose %s", io->ops->name);
		if (ret >= 0)
			img_io_close(u);
		img_io_close(io);
	} else {
		CHECK(0);
	}

	test_wrappers();
	test_no_uring();
	free(ref);
	return test_done();
}
