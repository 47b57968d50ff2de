/* SPDX-License-Identifier: MIT */
/*
 * The NBD wire codec declared in nbd-wire.h: pure functions from bytes to
 * structs and back, and the validation of a transmission request against the
 * negotiated state, so that the socket loop never interprets a byte it has
 * not checked. Everything here is deterministic and allocation-free, which is
 * what lets tests/fuzz/fuzz-nbd-wire.c drive it with arbitrary input.
 */
#include <errno.h>
#include <string.h>

#include "nbd-wire.h"

void nbd_build_greeting(uint8_t out[NBD_GREETING_SIZE], uint16_t flags)
{
	nbd_put64(out, NBD_MAGIC);
	nbd_put64(out + 8, NBD_OPT_MAGIC);
	nbd_put16(out + 16, flags);
}

int nbd_parse_opt_hdr(const uint8_t in[NBD_OPT_HDR_SIZE],
		      struct nbd_opt_hdr *hdr)
{
	if (nbd_get64(in) != NBD_OPT_MAGIC)
		return -EINVAL;
	hdr->opt = nbd_get32(in + 8);
	hdr->len = nbd_get32(in + 12);
	return 0;
}

void nbd_build_opt_reply(uint8_t out[NBD_OPT_REPLY_HDR_SIZE], uint32_t opt,
			 uint32_t type, uint32_t len)
{
	nbd_put64(out, NBD_REP_MAGIC);
	nbd_put32(out + 8, opt);
	nbd_put32(out + 12, type);
	nbd_put32(out + 16, len);
}

/* A string of len bytes at p: within the limit and free of NUL bytes. */
static int check_string(const uint8_t *p, size_t len)
{
	if (len > NBD_MAX_STRING || memchr(p, 0, len))
		return -EINVAL;
	return 0;
}

int nbd_parse_name(const uint8_t *in, size_t len, struct nbd_str *name)
{
	if (check_string(in, len) < 0)
		return -EINVAL;
	name->p = (const char *)in;
	name->len = (uint32_t)len;
	return 0;
}

/* Read a 32-bit length-prefixed string at *pos; advance past it. */
static int take_string(const uint8_t *in, size_t len, size_t *pos,
		       struct nbd_str *s)
{
	uint32_t n;

	if (len - *pos < 4)
		return -EINVAL;
	n = nbd_get32(in + *pos);
	*pos += 4;
	if (n > len - *pos || check_string(in + *pos, n) < 0)
		return -EINVAL;
	s->p = (const char *)in + *pos;
	s->len = n;
	*pos += n;
	return 0;
}

int nbd_parse_info_req(const uint8_t *in, size_t len, struct nbd_info_req *r)
{
	size_t pos = 0;

	if (take_string(in, len, &pos, &r->name) < 0 || len - pos < 2)
		return -EINVAL;
	r->n_infos = nbd_get16(in + pos);
	pos += 2;
	if (r->n_infos > NBD_MAX_INFO_REQS ||
	    len - pos != (size_t)r->n_infos * 2)
		return -EINVAL;
	for (unsigned i = 0; i < r->n_infos; i++)
		r->infos[i] = nbd_get16(in + pos + 2 * i);
	return 0;
}

int nbd_parse_meta_req(const uint8_t *in, size_t len, struct nbd_meta_req *r)
{
	size_t pos = 0;
	struct nbd_str q;

	if (take_string(in, len, &pos, &r->name) < 0 || len - pos < 4)
		return -EINVAL;
	r->n_queries = nbd_get32(in + pos);
	pos += 4;
	r->queries = in + pos;
	r->queries_len = len - pos;
	r->pos = 0;
	/* Walk once to validate: the caller then never sees a bad query. */
	for (uint32_t i = 0; i < r->n_queries; i++)
		if (take_string(r->queries, r->queries_len, &r->pos, &q) < 0)
			return -EINVAL;
	if (r->pos != r->queries_len)
		return -EINVAL;
	r->pos = 0;
	return 0;
}

bool nbd_meta_next(struct nbd_meta_req *r, struct nbd_str *query)
{
	if (r->pos >= r->queries_len)
		return false;
	return take_string(r->queries, r->queries_len, &r->pos, query) == 0;
}

int nbd_parse_request(const uint8_t *in, bool extended, struct nbd_request *req)
{
	uint32_t magic = nbd_get32(in);

	if (magic != (extended ? NBD_EXT_REQUEST_MAGIC : NBD_REQUEST_MAGIC))
		return -EINVAL;
	req->flags = nbd_get16(in + 4);
	req->type = nbd_get16(in + 6);
	req->cookie = nbd_get64(in + 8);
	req->off = nbd_get64(in + 16);
	req->len = extended ? nbd_get64(in + 24) : nbd_get32(in + 24);
	return 0;
}

size_t nbd_build_request(uint8_t *out, bool extended,
			 const struct nbd_request *req)
{
	nbd_put32(out, extended ? NBD_EXT_REQUEST_MAGIC : NBD_REQUEST_MAGIC);
	nbd_put16(out + 4, req->flags);
	nbd_put16(out + 6, req->type);
	nbd_put64(out + 8, req->cookie);
	nbd_put64(out + 16, req->off);
	if (extended) {
		nbd_put64(out + 24, req->len);
		return NBD_EXT_REQUEST_SIZE;
	}
	nbd_put32(out + 24, (uint32_t)req->len);
	return NBD_REQUEST_SIZE;
}

size_t nbd_build_simple_reply(uint8_t *out, uint32_t error, uint64_t cookie)
{
	nbd_put32(out, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(out + 4, error);
	nbd_put64(out + 8, cookie);
	return NBD_SIMPLE_REPLY_SIZE;
}

size_t nbd_build_chunk(uint8_t *out, enum nbd_reply_mode mode, uint16_t flags,
		       uint16_t type, uint64_t cookie, uint64_t off,
		       uint64_t payload_len)
{
	nbd_put32(out, mode == NBD_MODE_EXTENDED ? NBD_EXT_REPLY_MAGIC :
						   NBD_STRUCT_REPLY_MAGIC);
	nbd_put16(out + 4, flags);
	nbd_put16(out + 6, type);
	nbd_put64(out + 8, cookie);
	if (mode == NBD_MODE_EXTENDED) {
		nbd_put64(out + 16, off);
		nbd_put64(out + 24, payload_len);
		return NBD_EXT_REPLY_SIZE;
	}
	nbd_put32(out + 16, (uint32_t)payload_len);
	return NBD_STRUCT_REPLY_SIZE;
}

size_t nbd_build_error_payload(uint8_t *out, size_t out_size, uint32_t error,
			       const char *msg)
{
	size_t n = msg ? strlen(msg) : 0;

	if (out_size < 6)
		return 0;
	if (n > out_size - 6)
		n = out_size - 6;
	if (n > NBD_MAX_STRING)
		n = NBD_MAX_STRING;
	nbd_put32(out, error);
	nbd_put16(out + 4, (uint16_t)n);
	memcpy(out + 6, msg, n);
	return 6 + n;
}

/* Flags each command accepts, before checking what was advertised. */
static uint16_t allowed_flags(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF;
	case NBD_CMD_WRITE:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_PAYLOAD_LEN;
	case NBD_CMD_WRITE_ZEROES:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
		       NBD_CMD_FLAG_FAST_ZERO;
	case NBD_CMD_BLOCK_STATUS:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
	default:
		return NBD_CMD_FLAG_FUA;
	}
}

uint32_t nbd_check_request(const struct nbd_request *req,
			   const struct nbd_limits *lim, uint64_t *payload_len,
			   bool *fatal)
{
	bool ro = lim->tflags & NBD_FLAG_READ_ONLY;
	bool is_write = false;
	uint16_t need = 0;

	*payload_len = 0;
	*fatal = false;
	if (req->type == NBD_CMD_WRITE) {
		*payload_len = req->len;
		/* A payload we will not buffer cannot be skipped cheaply
		 * either: the stream is lost. */
		if (req->len > lim->max_payload) {
			*fatal = true;
			return NBD_EOVERFLOW;
		}
	} else if ((req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) && lim->extended) {
		/* No other command takes a payload here: we cannot tell how
		 * many bytes follow, so the stream is lost. */
		*fatal = true;
		return NBD_EINVAL;
	}

	switch (req->type) {
	case NBD_CMD_READ:
	case NBD_CMD_CACHE:
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_WRITE_ZEROES:
	case NBD_CMD_TRIM:
		is_write = true;
		break;
	case NBD_CMD_DISC:
	case NBD_CMD_FLUSH:
		return (req->flags & ~NBD_CMD_FLAG_FUA) ? NBD_EINVAL : 0;
	case NBD_CMD_BLOCK_STATUS:
		if (!lim->structured || !lim->has_contexts)
			return NBD_EINVAL;
		break;
	default:
		return NBD_EINVAL;
	}

	if (req->flags & ~allowed_flags(req->type))
		return NBD_EINVAL;
	if (req->flags & NBD_CMD_FLAG_FUA)
		need |= NBD_FLAG_SEND_FUA;
	if (req->flags & NBD_CMD_FLAG_DF)
		need |= NBD_FLAG_SEND_DF;
	if (req->flags & NBD_CMD_FLAG_FAST_ZERO)
		need |= NBD_FLAG_SEND_FAST_ZERO;
	if ((req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) && !lim->extended)
		return NBD_EINVAL;
	if (is_write && ro)
		return NBD_EPERM;
	if (req->type == NBD_CMD_TRIM)
		need |= NBD_FLAG_SEND_TRIM;
	if (req->type == NBD_CMD_WRITE_ZEROES)
		need |= NBD_FLAG_SEND_WRITE_ZEROES;
	if (req->type == NBD_CMD_CACHE)
		need |= NBD_FLAG_SEND_CACHE;
	if ((lim->tflags & need) != need)
		return NBD_EINVAL;

	if (!req->len)
		return NBD_EINVAL;
	if (req->off > lim->size || req->len > lim->size - req->off)
		return (req->type == NBD_CMD_WRITE ||
			req->type == NBD_CMD_WRITE_ZEROES) ?
			       NBD_ENOSPC :
			       NBD_EINVAL;
	if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_CACHE) &&
	    req->len > lim->max_payload)
		return NBD_EOVERFLOW;
	return 0;
}

uint32_t nbd_errno(int err)
{
	switch (-err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
	case EACCES:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}
