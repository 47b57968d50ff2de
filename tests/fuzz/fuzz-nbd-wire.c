/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for img-nbd's wire codec (tools/nbd/nbd-wire.c, compiled
 * into this target): the input is what a client sends. The first byte sets
 * the negotiated state (extended headers, structured replies, read-only, a
 * meta context, the export size); the rest is a stream of option headers and
 * payloads, parsed as the handshake does (INFO/GO, meta context requests
 * with every query walked, export names), until an EXPORT_NAME or GO option,
 * after which it is a stream of transmission requests, each parsed and
 * checked against the state, with a reply header built for it. Any crash,
 * out-of-bounds access or inconsistency (a request accepted past the export
 * end, a payload over the cap, a request that does not encode back to the
 * very bytes it was decoded from, a name or query that is not the bytes it
 * came from) is a bug and aborts.
 */
#include <stdlib.h>
#include <string.h>

#include "../../tools/nbd/nbd-wire.c"
#include "fuzz.h"

#define SIZE_UNIT (1ull << 20)

static void handshake_option(uint32_t opt, const uint8_t *p, uint32_t len)
{
	struct nbd_info_req info;
	struct nbd_meta_req meta;
	struct nbd_str s;
	uint8_t out[NBD_OPT_REPLY_HDR_SIZE];

	switch (opt) {
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		if (nbd_parse_info_req(p, len, &info) == 0 &&
		    (info.name.len > len || info.n_infos > NBD_MAX_INFO_REQS))
			abort();
		break;
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		if (nbd_parse_meta_req(p, len, &meta) == 0) {
			uint32_t n = 0;

			while (nbd_meta_next(&meta, &s)) {
				if (s.len > NBD_MAX_STRING ||
				    memchr(s.p, 0, s.len))
					abort();
				n++;
			}
			if (n != meta.n_queries)
				abort();
		}
		break;
	case NBD_OPT_EXPORT_NAME:
		if (nbd_parse_name(p, len, &s) == 0 &&
		    (s.len != len || (len && s.p != (const char *)p)))
			abort();
		break;
	}
	nbd_build_opt_reply(out, opt, NBD_REP_ACK, len);
}

static void transmission(const uint8_t *data, size_t size,
			 const struct nbd_limits *lim)
{
	size_t hdr = lim->extended ? NBD_EXT_REQUEST_SIZE : NBD_REQUEST_SIZE;
	uint8_t out[NBD_MAX_REPLY_HDR_SIZE + 64];

	while (size >= hdr) {
		struct nbd_request r, again;
		uint64_t payload;
		bool fatal;
		uint32_t err;

		const uint8_t *wire = data;

		if (nbd_parse_request(data, lim->extended, &r) < 0)
			return;
		data += hdr;
		size -= hdr;
		err = nbd_check_request(&r, lim, &payload, &fatal);
		if (!err && r.type != NBD_CMD_DISC && r.type != NBD_CMD_FLUSH &&
		    (r.off + r.len > lim->size || r.off + r.len < r.off))
			abort();
		if (!err &&
		    (r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) &&
		    r.len > lim->max_payload)
			abort();
		if (!err && payload > lim->max_payload)
			abort();
		if (nbd_build_request(out, lim->extended, &r) != hdr ||
		    memcmp(out, wire, hdr))
			abort(); /* every header bit is a field: same bytes */
		if (nbd_parse_request(out, lim->extended, &again) < 0 ||
		    again.flags != r.flags || again.type != r.type ||
		    again.cookie != r.cookie || again.off != r.off ||
		    again.len != r.len)
			abort();
		nbd_build_chunk(out,
				lim->extended ? NBD_MODE_EXTENDED :
						NBD_MODE_STRUCTURED,
				NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
				r.cookie, r.off, 6);
		nbd_build_error_payload(out, sizeof(out), err ? err : EINVAL,
					"fuzz");
		nbd_build_simple_reply(out, nbd_errno(-(int)err), r.cookie);
		if (fatal)
			return;
		if (payload >= size)
			return;
		data += payload;
		size -= payload;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_limits lim = { .max_payload = 32u << 20 };
	uint8_t greet[NBD_GREETING_SIZE];
	uint8_t mode;

	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	lim.extended = mode & 1;
	lim.structured = lim.extended || (mode & 2);
	lim.has_contexts = lim.structured && (mode & 4);
	lim.tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
		     NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
	if (mode & 8)
		lim.tflags |= NBD_FLAG_READ_ONLY;
	else
		lim.tflags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
			      NBD_FLAG_SEND_FAST_ZERO;
	if (lim.structured)
		lim.tflags |= NBD_FLAG_SEND_DF;
	lim.size = (uint64_t)(mode >> 4) * SIZE_UNIT + (mode & 0x10 ? 511 : 0);
	nbd_build_greeting(greet, NBD_FLAG_FIXED_NEWSTYLE);

	while (size >= NBD_OPT_HDR_SIZE) {
		struct nbd_opt_hdr h;

		if (nbd_parse_opt_hdr(data, &h) < 0)
			break;
		data += NBD_OPT_HDR_SIZE;
		size -= NBD_OPT_HDR_SIZE;
		if (h.len > size || h.len > NBD_MAX_OPT_PAYLOAD)
			return 0;
		handshake_option(h.opt, data, h.len);
		data += h.len;
		size -= h.len;
		if (h.opt == NBD_OPT_EXPORT_NAME || h.opt == NBD_OPT_GO)
			break;
	}
	transmission(data, size, &lim);
	return 0;
}
