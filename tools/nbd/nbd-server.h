/* SPDX-License-Identifier: MIT */
/*
 * The img-nbd server core: the export table, listening sockets, one reader
 * thread per connection and request dispatch onto the library's aio pool.
 * nbd-main.c fills the options and exports from the command line; nbd-tls.c
 * provides the TLS layer this file calls through nbd-tls.h.
 */
#ifndef NBD_SERVER_H
#define NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "img.h"

struct nbd_tls;

struct nbd_export {
	char *name;
	char *description; /* may be NULL */
	struct img *img; /* owned by the export once the server has it */
	bool read_only;
	const char *bitmap; /* -B: dirty bitmap offered as a meta context */
};

enum nbd_detect_zeroes {
	NBD_DZ_OFF,
	NBD_DZ_ON,
	NBD_DZ_UNMAP,
};

struct nbd_server_opts {
	unsigned max_conns; /* connection cap (default 100) */
	unsigned handshake_timeout; /* seconds, 0 = none */
	bool persistent; /* -t: keep serving after the last client */
	bool allocation_depth; /* -A: offer qemu:allocation-depth */
	bool discard; /* --discard=unmap: TRIM deallocates */
	enum nbd_detect_zeroes detect_zeroes;
	unsigned threads; /* aio pool workers; 0 = run on connection threads */
	struct nbd_tls *tls; /* non-NULL: TLS required (FORCEDTLS mode) */
};

struct nbd_server;

/*
 * A server over n exports (the array and its images belong to the server
 * from now on, even on failure). Returns 0 or -errno with img_error() set.
 */
int nbd_server_new(const struct nbd_server_opts *opts,
		   struct nbd_export *exports, size_t n,
		   struct nbd_server **out);

/*
 * Serve on the listening sockets until nbd_server_stop() or, unless
 * persistent, until the last client of at least one has gone. In-flight
 * requests then drain. Returns 0 or -errno.
 */
int nbd_server_run(struct nbd_server *s, const int *listen_fds, size_t n);

/* Ask run() to return; async-signal-safe. */
void nbd_server_stop(struct nbd_server *s);

/* Flush and close every export and free the server. Returns the first
 * close error. */
int nbd_server_free(struct nbd_server *s);

#endif
