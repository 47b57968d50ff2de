/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for img-nbd's wire codec (tools/nbd/nbd-wire.c, compiled in):
 * byte layouts of the greeting, option replies, request and reply headers
 * (compact, structured, extended) against proto.md; the option payload
 * parsers on valid and malformed input; nbd_check_request's verdict for each
 * kind of bad request; the errno mapping.
 */
#include "../../tools/nbd/nbd-wire.c"
#include "tap.h"

#define MIB (1ull << 20)

static void test_layouts(void)
{
	static const uint8_t greet_want[] = { 'N', 'B', 'D', 'M', 'A', 'G',
					      'I', 'C', 'I', 'H', 'A', 'V',
					      'E', 'O', 'P', 'T', 0,   3 };
	uint8_t b[64];
	struct nbd_request r = { .flags = 0x0102,
				 .type = 7,
				 .cookie = 0x1122,
				 .off = 0x33,
				 .len = 0x44 },
			   q;

	nbd_build_greeting(b, 3);
	CHECK(!memcmp(b, greet_want, sizeof(greet_want)));

	nbd_build_opt_reply(b, 7, NBD_REP_ERR_UNKNOWN, 5);
	CHECK_EQ(nbd_get64(b), 0x3e889045565a9ull);
	CHECK_EQ(nbd_get32(b + 8), 7);
	CHECK_EQ(nbd_get32(b + 12), 0x80000006u);
	CHECK_EQ(nbd_get32(b + 16), 5);

	CHECK_EQ(nbd_build_request(b, false, &r), 28);
	CHECK_EQ(nbd_get32(b), 0x25609513u);
	CHECK_EQ(nbd_get16(b + 4), 0x0102);
	CHECK_EQ(nbd_get16(b + 6), 7);
	CHECK_EQ(nbd_get32(b + 24), 0x44);
	CHECK_OK(nbd_parse_request(b, false, &q));
	CHECK(q.cookie == r.cookie && q.off == r.off && q.len == r.len);
	CHECK_EQ(nbd_parse_request(b, true, &q), -EINVAL);

	r.len = 1ull << 40;
	CHECK_EQ(nbd_build_request(b, true, &r), 32);
	CHECK_EQ(nbd_get32(b), 0x21e41c71u);
	CHECK_OK(nbd_parse_request(b, true, &q));
	CHECK(q.len == 1ull << 40);
	CHECK_EQ(nbd_parse_request(b, false, &q), -EINVAL);

	CHECK_EQ(nbd_build_simple_reply(b, 22, 9), 16);
	CHECK_EQ(nbd_get32(b), 0x67446698u);
	CHECK_EQ(nbd_get32(b + 4), 22);
	CHECK_EQ(nbd_get64(b + 8), 9);

	CHECK_EQ(nbd_build_chunk(b, NBD_MODE_STRUCTURED, 1, 2, 9, 100, 12), 20);
	CHECK_EQ(nbd_get32(b), 0x668e33efu);
	CHECK_EQ(nbd_get16(b + 4), 1);
	CHECK_EQ(nbd_get16(b + 6), 2);
	CHECK_EQ(nbd_get32(b + 16), 12);

	CHECK_EQ(nbd_build_chunk(b, NBD_MODE_EXTENDED, 1, 6, 9, 100,
				 1ull << 33),
		 32);
	CHECK_EQ(nbd_get32(b), 0x6e8a278cu);
	CHECK_EQ(nbd_get64(b + 16), 100);
	CHECK(nbd_get64(b + 24) == 1ull << 33);

	CHECK_EQ(nbd_build_error_payload(b, 10, 5, "abcdefgh"), 10);
	CHECK_EQ(nbd_get32(b), 5);
	CHECK_EQ(nbd_get16(b + 4), 4);
	CHECK(!memcmp(b + 6, "abcd", 4));
}

static size_t put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s);

	nbd_put32(p, n);
	memcpy(p + 4, s, n);
	return 4 + n;
}

static void test_options(void)
{
	uint8_t b[256];
	struct nbd_info_req ir;
	struct nbd_meta_req mr;
	struct nbd_str q;
	size_t n;

	n = put_str(b, "exp");
	nbd_put16(b + n, 2);
	nbd_put16(b + n + 2, NBD_INFO_NAME);
	nbd_put16(b + n + 4, NBD_INFO_BLOCK_SIZE);
	CHECK_OK(nbd_parse_info_req(b, n + 6, &ir));
	CHECK(ir.name.len == 3 && !memcmp(ir.name.p, "exp", 3));
	CHECK(ir.n_infos == 2 && ir.infos[1] == NBD_INFO_BLOCK_SIZE);
	CHECK_EQ(nbd_parse_info_req(b, n + 5, &ir), -EINVAL);
	CHECK_EQ(nbd_parse_info_req(b, n + 7, &ir), -EINVAL);
	CHECK_EQ(nbd_parse_info_req(b, 3, &ir), -EINVAL);
	nbd_put32(b, 0xffffffff);
	CHECK_EQ(nbd_parse_info_req(b, n + 6, &ir), -EINVAL);
	nbd_put32(b, 3);
	memcpy(b + 4, "e\0p", 3);
	n = 7;
	nbd_put16(b + n, 0);
	CHECK_EQ(nbd_parse_info_req(b, n + 2, &ir), -EINVAL);

	n = put_str(b, "exp");
	nbd_put32(b + n, 2);
	n += 4;
	n += put_str(b + n, "base:allocation");
	n += put_str(b + n, "qemu:");
	CHECK_OK(nbd_parse_meta_req(b, n, &mr));
	CHECK(nbd_meta_next(&mr, &q) && q.len == 15);
	CHECK(nbd_meta_next(&mr, &q) && q.len == 5 && !memcmp(q.p, "qemu:", 5));
	CHECK(!nbd_meta_next(&mr, &q));
	CHECK_EQ(nbd_parse_meta_req(b, n - 1, &mr), -EINVAL);
	CHECK_EQ(nbd_parse_meta_req(b, n + 1, &mr), -EINVAL);
	nbd_put32(b + 7, 3);
	CHECK_EQ(nbd_parse_meta_req(b, n, &mr), -EINVAL);

	CHECK_OK(nbd_parse_name((const uint8_t *)"x", 1, &q));
	CHECK_EQ(nbd_parse_name((const uint8_t *)"x\0", 2, &q), -EINVAL);
}

static uint32_t check(const struct nbd_limits *lim, uint16_t type,
		      uint16_t flags, uint64_t off, uint64_t len, bool *fatal)
{
	struct nbd_request r = {
		.type = type, .flags = flags, .off = off, .len = len
	};
	uint64_t payload;

	return nbd_check_request(&r, lim, &payload, fatal);
}

static void test_check_request(void)
{
	struct nbd_limits lim = {
		.size = 64 * MIB,
		.max_payload = 32 * MIB,
		.tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
			  NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
			  NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF |
			  NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_FAST_ZERO,
		.structured = true,
		.has_contexts = true,
	};
	struct nbd_request w = { .type = NBD_CMD_WRITE, .len = 4096 };
	uint64_t payload;
	bool fatal;

	CHECK_EQ(check(&lim, NBD_CMD_READ, 0, 0, 4096, &fatal), 0);
	CHECK_EQ(check(&lim, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 4096, &fatal),
		 0);
	CHECK_EQ(check(&lim, NBD_CMD_READ, 0, 64 * MIB - 1, 2, &fatal),
		 NBD_EINVAL);
	CHECK_EQ(check(&lim, NBD_CMD_READ, 0, UINT64_MAX, 2, &fatal),
		 NBD_EINVAL);
	CHECK_EQ(check(&lim, NBD_CMD_READ, 0, 0, 0, &fatal), NBD_EINVAL);
	CHECK_EQ(check(&lim, NBD_CMD_READ, 0, 0, 32 * MIB + 1, &fatal),
		 NBD_EOVERFLOW);
	CHECK(!fatal);
	CHECK_EQ(check(&lim, NBD_CMD_WRITE, 0, 64 * MIB, 1, &fatal),
		 NBD_ENOSPC);
	CHECK_EQ(check(&lim, NBD_CMD_WRITE, 0, 0, 32 * MIB + 1, &fatal),
		 NBD_EOVERFLOW);
	CHECK(fatal);
	CHECK_EQ(check(&lim, NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 0, 1, &fatal),
		 NBD_EINVAL);
	CHECK_EQ(check(&lim, NBD_CMD_WRITE_ZEROES,
		       NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO, 0,
		       64 * MIB, &fatal),
		 0);
	CHECK_EQ(check(&lim, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0,
		       64 * MIB, &fatal),
		 0);
	CHECK_EQ(check(&lim, 99, 0, 0, 1, &fatal), NBD_EINVAL);
	CHECK_EQ(check(&lim, NBD_CMD_FLUSH, 1u << 9, 0, 0, &fatal), NBD_EINVAL);
	CHECK_EQ(check(&lim, NBD_CMD_READ, NBD_CMD_FLAG_PAYLOAD_LEN, 0, 1,
		       &fatal),
		 NBD_EINVAL);
	CHECK(!fatal);

	/* A write's payload must be consumed even when it is refused. */
	w.flags = 1u << 12;
	CHECK_EQ(nbd_check_request(&w, &lim, &payload, &fatal), NBD_EINVAL);
	CHECK(payload == 4096 && !fatal);

	lim.extended = true;
	CHECK_EQ(check(&lim, NBD_CMD_READ, NBD_CMD_FLAG_PAYLOAD_LEN, 0, 1,
		       &fatal),
		 NBD_EINVAL);
	CHECK(fatal);
	w.flags = NBD_CMD_FLAG_PAYLOAD_LEN;
	CHECK_EQ(nbd_check_request(&w, &lim, &payload, &fatal), 0);

	lim.tflags |= NBD_FLAG_READ_ONLY;
	CHECK_EQ(check(&lim, NBD_CMD_WRITE, 0, 0, 1, &fatal), NBD_EPERM);
	CHECK_EQ(check(&lim, NBD_CMD_TRIM, 0, 0, 1, &fatal), NBD_EPERM);
	lim.has_contexts = false;
	CHECK_EQ(check(&lim, NBD_CMD_BLOCK_STATUS, 0, 0, 1, &fatal),
		 NBD_EINVAL);
	lim.tflags &= ~NBD_FLAG_SEND_DF;
	CHECK_EQ(check(&lim, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1, &fatal),
		 NBD_EINVAL);
}

static void test_errno(void)
{
	CHECK_EQ(nbd_errno(-EROFS), NBD_EPERM);
	CHECK_EQ(nbd_errno(-EDQUOT), NBD_ENOSPC);
	CHECK_EQ(nbd_errno(-IMG_ECORRUPT), NBD_EIO);
	CHECK_EQ(nbd_errno(-ENOTSUP), NBD_ENOTSUP);
	CHECK_EQ(nbd_errno(0), 0);
}

int main(void)
{
	test_layouts();
	test_options();
	test_check_request();
	test_errno();
	return test_done();
}
