/* SPDX-License-Identifier: MIT */
/*
 * Tests for the faulty backend: which ops are counted, a fault at op N (once
 * and sticky), torn writes, a fault inside a batch, and crash replay: every
 * prefix of the log applied to a fresh mem file gives the file as it was
 * right after the corresponding op.
 */
#include "internal.h"
#include "tap.h"

static struct img_io *new_faulty(void)
{
	struct img_io *mem, *io;

	if (img_io_mem_new(NULL, 0, &mem) < 0 ||
	    img_io_faulty_new(mem, &io) < 0) {
		fprintf(stderr, "cannot set up a faulty mem file: %s\n",
			img_last_error());
		exit(1);
	}
	return io;
}

static void test_counting(void)
{
	struct img_io *io = new_faulty();
	uint8_t buf[64] = { 1 }, b2[64];
	struct img_io_vec v[3] = {
		{ buf, 10, 0, true },
		{ b2, 10, 100, false },
		{ buf, 10, 200, true },
	};
	uint64_t size;
	bool data;

	CHECK_EQ(img_io_faulty_ops(io), 0);
	CHECK_OK(img_io_pwrite(io, buf, sizeof(buf), 0));
	CHECK_OK(img_io_pread(io, buf, sizeof(buf), 0));
	CHECK_EQ(img_io_faulty_ops(io), 2);
	CHECK_OK(img_io_submit(io, v, 3));
	CHECK_EQ(img_io_faulty_ops(io), 5);
	CHECK_OK(img_io_flush(io));
	CHECK_OK(img_io_zero(io, 0, 10, 0));
	CHECK_OK(img_io_truncate(io, 1000));
	CHECK_ERR(img_io_allocate(io, 0, 10), -ENOTSUP);
	CHECK_EQ(img_io_faulty_ops(io), 9);
	/* Queries are not counted. */
	CHECK_OK(img_io_size(io, &size));
	CHECK_EQ(size, 1000);
	CHECK_OK(img_io_extent(io, 0, 10, &data, &size));
	CHECK_OK(img_io_allocated(io, &size));
	/* Zero-length requests never reach the backend. */
	CHECK_OK(img_io_pwrite(io, buf, 0, 0));
	CHECK_EQ(img_io_faulty_ops(io), 9);
	/* cache=unsafe: flush is a no-op above the backend. */
	io->flags |= IMG_IO_NOFLUSH;
	CHECK_OK(img_io_flush(io));
	CHECK_EQ(img_io_faulty_ops(io), 9);
	io->flags &= ~IMG_IO_NOFLUSH;
	CHECK_OK(img_io_flush(io));
	CHECK_EQ(img_io_faulty_ops(io), 10);
	img_io_close(io);
}

static void test_fault_once_and_sticky(void)
{
	struct img_io *io = new_faulty();
	uint8_t a[16], b[16];

	memset(a, 0x11, sizeof(a));
	img_io_faulty_arm(io, 3, EIO, false);
	CHECK_OK(img_io_pwrite(io, a, 16, 0));
	CHECK_OK(img_io_pread(io, b, 16, 0));
	CHECK_ERR(img_io_pwrite(io, a, 16, 16), -EIO);
	CHECK_STR_HAS(img_last_error(), "io: pwrite of 16 bytes at 0x10");
	CHECK_OK(img_io_pread(io, b, 16, 16));
	CHECK(img_is_zero(b, 16));
	CHECK_OK(img_io_pwrite(io, a, 16, 32));
	CHECK_OK(img_io_flush(io));
	CHECK_EQ(img_io_faulty_ops(io), 6);

	/* Sticky from op 8: every later op fails, reads included. */
	img_io_faulty_arm(io, 8, ENOSPC, true);
	CHECK_OK(img_io_pwrite(io, a, 16, 48));
	CHECK_ERR(img_io_pwrite(io, a, 16, 64), -ENOSPC);
	CHECK_ERR(img_io_flush(io), -ENOSPC);
	CHECK_ERR(img_io_pread(io, b, 16, 0), -ENOSPC);
	CHECK_ERR(img_io_truncate(io, 0), -ENOSPC);
	CHECK_ERR(img_io_zero(io, 0, 1, 0), -ENOSPC);

	/* Disarmed: everything works again. */
	img_io_faulty_arm(io, 0, 0, false);
	CHECK_OK(img_io_pread(io, b, 16, 48));
	CHECK(!memcmp(a, b, 16));
	img_io_close(io);
}

static void test_torn_write(void)
{
	struct img_io *io = new_faulty();
	uint8_t a[100], b[100];
	const struct img_io_log_entry *log;
	size_t n;

	memset(a, 0x5a, sizeof(a));
	img_io_faulty_arm(io, 1, 0, false);
	CHECK_ERR(img_io_pwrite(io, a, 100, 1000), -EIO);
	CHECK_OK(img_io_pread(io, b, 100, 1000));
	CHECK(!memcmp(b, a, 50));
	CHECK(img_is_zero(b + 50, 50));
	img_io_faulty_log(io, &log, &n);
	CHECK_EQ(n, 1);
	if (n == 1) {
		CHECK_EQ(log[0].kind, IMG_LOG_WRITE);
		CHECK_EQ(log[0].len, 50);
		CHECK_EQ(log[0].file_off, 1000);
	}
	img_io_close(io);
}

static void test_batch_fault(void)
{
	struct img_io *io = new_faulty();
	uint8_t a[3][32], b[32];
	struct img_io_vec v[3];

	for (int i = 0; i < 3; i++) {
		memset(a[i], i + 1, 32);
		v[i] = (struct img_io_vec){ a[i], 32, (uint64_t)i * 32, true };
	}
	img_io_faulty_arm(io, 2, EIO, false);
	CHECK_ERR(img_io_submit(io, v, 3), -EIO);
	img_io_faulty_arm(io, 0, 0, false);
	CHECK_OK(img_io_pread(io, b, 32, 0));
	CHECK(!memcmp(b, a[0], 32));
	CHECK_OK(img_io_pread(io, b, 32, 32));
	CHECK(img_is_zero(b, 32));
	CHECK_OK(img_io_pread(io, b, 32, 64));
	CHECK(!memcmp(b, a[2], 32));
	img_io_close(io);
}

struct snap {
	uint8_t *data;
	size_t len;
};

static void take_snap(struct img_io *io, struct snap *s)
{
	uint64_t size = 0;

	CHECK_OK(img_io_size(io, &size));
	s->len = (size_t)size;
	s->data = malloc(s->len + 1);
	CHECK_OK(img_io_pread(io, s->data, size, 0));
}

static void test_replay(void)
{
	struct img_io *io = new_faulty();
	struct snap snaps[64];
	const struct img_io_log_entry *log;
	size_t n, nsnap = 0;
	uint8_t buf[5000];
	uint64_t seed = 12345;

	/* Each op below logs exactly one entry: snapshot after each. */
	for (int i = 0; i < 40; i++) {
		unsigned kind = i % 7;
		uint64_t off, len;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		off = (seed >> 33) % 20000;
		len = 1 + (seed >> 20) % sizeof(buf);
		if (kind < 4) {
			memset(buf, i + 1, len);
			CHECK_OK(img_io_pwrite(io, buf, len, off));
		} else if (kind == 4) {
			CHECK_OK(img_io_zero(io, off, len, 0));
		} else if (kind == 5) {
			CHECK_OK(img_io_truncate(io, off));
		} else {
			CHECK_OK(img_io_flush(io));
		}
		take_snap(io, &snaps[nsnap++]);
	}
	img_io_faulty_log(io, &log, &n);
	CHECK_EQ(n, nsnap);
	for (size_t k = 0; k <= n && k <= nsnap; k++) {
		struct img_io *mem;
		const uint8_t *data;
		size_t len;

		CHECK_OK(img_io_mem_new(NULL, 0, &mem));
		CHECK_OK(img_io_log_apply(mem, log, k));
		img_io_mem_data(mem, &data, &len);
		if (k == 0) {
			CHECK_EQ(len, 0);
		} else {
			CHECK_EQ(len, snaps[k - 1].len);
			CHECK(len == snaps[k - 1].len &&
			      (!len || !memcmp(data, snaps[k - 1].data, len)));
		}
		img_io_close(mem);
	}
	for (size_t i = 0; i < nsnap; i++)
		free(snaps[i].data);
	img_io_close(io);
}

int main(void)
{
	test_counting();
	test_fault_once_and_sticky();
	test_torn_write();
	test_batch_fault();
	test_replay();
	return test_done();
}
