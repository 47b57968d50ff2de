/* SPDX-License-Identifier: MIT */
/*
 * The NBD wire format (NetworkBlockDevice doc/proto.md, fixed newstyle
 * handshake with the INFO, STRUCTURED_REPLY, META_CONTEXT and
 * EXTENDED_HEADERS extensions): constants, and a pure codec that parses what
 * a client sends (option headers and payloads, transmission requests) and
 * builds what the server sends (option replies, simple, structured and
 * extended reply headers). No I/O and no allocation: every parser checks
 * lengths against the bytes it was given, so the socket loop and the fuzzer
 * can feed it anything.
 */
#ifndef NBD_WIRE_H
#define NBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_MAGIC 0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPT_MAGIC 0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ull
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_EXT_REQUEST_MAGIC 0x21e41c71u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCT_REPLY_MAGIC 0x668e33efu
#define NBD_EXT_REPLY_MAGIC 0x6e8a278cu

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT 2
#define NBD_OPT_LIST 3
#define NBD_OPT_STARTTLS 5
#define NBD_OPT_INFO 6
#define NBD_OPT_GO 7
#define NBD_OPT_STRUCTURED_REPLY 8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT 10
#define NBD_OPT_EXTENDED_HEADERS 11

/* Option reply types. */
#define NBD_REP_ACK 1
#define NBD_REP_SERVER 2
#define NBD_REP_INFO 3
#define NBD_REP_META_CONTEXT 4
#define NBD_REP_ERR(n) (0x80000000u | (n))
#define NBD_REP_ERR_UNSUP NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG NBD_REP_ERR(9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT 0
#define NBD_INFO_NAME 1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE 3

/* Commands and command flags. */
#define NBD_CMD_READ 0
#define NBD_CMD_WRITE 1
#define NBD_CMD_DISC 2
#define NBD_CMD_FLUSH 3
#define NBD_CMD_TRIM 4
#define NBD_CMD_CACHE 5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* Structured reply flags and chunk types. */
#define NBD_REPLY_FLAG_DONE (1u << 0)
#define NBD_REPLY_TYPE_NONE 0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6
#define NBD_REPLY_TYPE_ERROR ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* base:allocation status bits. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* Error values on the wire. */
#define NBD_EPERM 1
#define NBD_EIO 5
#define NBD_ENOMEM 12
#define NBD_EINVAL 22
#define NBD_ENOSPC 28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP 95
#define NBD_ESHUTDOWN 108

/* Sizes of the fixed parts. */
#define NBD_GREETING_SIZE 18 /* NBDMAGIC, IHAVEOPT, handshake flags */
#define NBD_OPT_HDR_SIZE 16
#define NBD_OPT_REPLY_HDR_SIZE 20
#define NBD_EXPORT_NAME_REPLY_SIZE 134 /* size, flags, 124 zero bytes */
#define NBD_REQUEST_SIZE 28
#define NBD_EXT_REQUEST_SIZE 32
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_STRUCT_REPLY_SIZE 20
#define NBD_EXT_REPLY_SIZE 32
#define NBD_MAX_REPLY_HDR_SIZE 32

/* Limits this server applies to what a client sends. */
#define NBD_MAX_STRING 4096 /* export names, queries (spec maximum) */
#define NBD_MAX_OPT_PAYLOAD (64 * 1024) /* option data */
#define NBD_MAX_INFO_REQS 64 /* NBD_INFO_* in one INFO/GO */

static inline void nbd_put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static inline void nbd_put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static inline void nbd_put64(uint8_t *p, uint64_t v)
{
	nbd_put32(p, v >> 32);
	nbd_put32(p + 4, v);
}

static inline uint16_t nbd_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t nbd_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t nbd_get64(const uint8_t *p)
{
	return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4);
}

/* A string inside a buffer the caller owns: not NUL-terminated. */
struct nbd_str {
	const char *p;
	uint32_t len;
};

/* Build the 18-byte greeting the server sends first. */
void nbd_build_greeting(uint8_t out[NBD_GREETING_SIZE], uint16_t flags);

struct nbd_opt_hdr {
	uint32_t opt;
	uint32_t len; /* payload bytes that follow */
};

/* Parse a 16-byte option header; -EINVAL on a bad magic. */
int nbd_parse_opt_hdr(const uint8_t in[NBD_OPT_HDR_SIZE],
		      struct nbd_opt_hdr *hdr);

/* Build a 20-byte option reply header announcing len payload bytes. */
void nbd_build_opt_reply(uint8_t out[NBD_OPT_REPLY_HDR_SIZE], uint32_t opt,
			 uint32_t type, uint32_t len);

/*
 * Payload of NBD_OPT_INFO / NBD_OPT_GO: export name, then the NBD_INFO_*
 * types the client asks for. Returns -EINVAL when the lengths disagree with
 * len, the name is longer than NBD_MAX_STRING or holds a NUL, or there are
 * more than NBD_MAX_INFO_REQS requests.
 */
struct nbd_info_req {
	struct nbd_str name;
	uint16_t n_infos;
	uint16_t infos[NBD_MAX_INFO_REQS];
};
int nbd_parse_info_req(const uint8_t *in, size_t len, struct nbd_info_req *r);

/*
 * Payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export
 * name, query count, then queries. nbd_parse_meta_req validates the whole
 * payload (-EINVAL on any inconsistency, strings over NBD_MAX_STRING or with
 * NUL bytes); nbd_meta_next then returns the queries one by one (false at
 * the end).
 */
struct nbd_meta_req {
	struct nbd_str name;
	uint32_t n_queries;
	const uint8_t *queries; /* the validated remainder */
	size_t queries_len;
	size_t pos;
};
int nbd_parse_meta_req(const uint8_t *in, size_t len, struct nbd_meta_req *r);
bool nbd_meta_next(struct nbd_meta_req *r, struct nbd_str *query);

/* Validate an EXPORT_NAME payload as an export name (-EINVAL if not). */
int nbd_parse_name(const uint8_t *in, size_t len, struct nbd_str *name);

/* A transmission request, from the compact or the extended header. */
struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t off;
	uint64_t len;
};

/*
 * Parse a request header of NBD_REQUEST_SIZE bytes (or NBD_EXT_REQUEST_SIZE
 * when extended headers were negotiated). -EINVAL on a bad magic: the
 * connection cannot be resynchronised and must be dropped.
 */
int nbd_parse_request(const uint8_t *in, bool extended,
		      struct nbd_request *req);
/* Build a request header (used by the tests and the fuzzer); returns size. */
size_t nbd_build_request(uint8_t *out, bool extended,
			 const struct nbd_request *req);

/*
 * Build the header of a reply to cookie into out (NBD_MAX_REPLY_HDR_SIZE
 * bytes) and return its size: a simple reply (error only, no structured
 * replies), a structured chunk header, or an extended header (off is the
 * request's offset). payload_len bytes follow it.
 */
enum nbd_reply_mode {
	NBD_MODE_SIMPLE,
	NBD_MODE_STRUCTURED,
	NBD_MODE_EXTENDED,
};
size_t nbd_build_simple_reply(uint8_t *out, uint32_t error, uint64_t cookie);
size_t nbd_build_chunk(uint8_t *out, enum nbd_reply_mode mode, uint16_t flags,
		       uint16_t type, uint64_t cookie, uint64_t off,
		       uint64_t payload_len);

/*
 * Payload of an NBD_REPLY_TYPE_ERROR chunk: error, message length, message
 * (cut to fit out_size). Returns the payload size.
 */
size_t nbd_build_error_payload(uint8_t *out, size_t out_size, uint32_t error,
			       const char *msg);

/* Validate the request against the negotiated state (see nbd_check). */
struct nbd_limits {
	uint64_t size; /* export size */
	uint64_t max_payload; /* largest READ/WRITE/CACHE length */
	uint16_t tflags; /* NBD_FLAG_* sent for the export */
	bool structured;
	bool extended;
	bool has_contexts; /* at least one meta context selected */
};

/*
 * Check req (already parsed) against the export: known command, flags
 * allowed for it and advertised, zero lengths, offset+length overflow and
 * range, payload cap. Returns 0 or the NBD error to reply with. For a WRITE
 * the payload is still on the wire: *payload_len says how many bytes to
 * read (and discard on error) unless *fatal, where the stream cannot be
 * resynchronised and the connection must be dropped.
 */
uint32_t nbd_check_request(const struct nbd_request *req,
			   const struct nbd_limits *lim, uint64_t *payload_len,
			   bool *fatal);

/* Map a -errno from the library to an NBD error value. */
uint32_t nbd_errno(int err);

#endif
