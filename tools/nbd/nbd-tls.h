/* SPDX-License-Identifier: MIT */
/*
 * TLS for img-nbd through OpenSSL: a server context built from x509
 * credentials (certificate, key, optional CA to verify client certificates)
 * or from a PSK file in qemu's keys.psk format ("identity:hexkey" lines), and
 * blocking read/write on an upgraded connection. TLS 1.2 is the minimum.
 */
#ifndef NBD_TLS_H
#define NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct nbd_tls;
struct nbd_tls_conn;

struct nbd_tls_opts {
	const char *cert; /* PEM server certificate (x509) */
	const char *key; /* PEM private key (x509) */
	const char *ca; /* PEM CA: verify client certificates; may be NULL */
	bool verify_peer; /* require a client certificate signed by ca */
	const char *psk_file; /* PSK credentials instead of x509 */
};

/* Build the TLS context; -errno with img_error() set on failure. */
int nbd_tls_new(const struct nbd_tls_opts *opts, struct nbd_tls **out);
/* Free the context and wipe the keys it holds. NULL is a no-op. */
void nbd_tls_free(struct nbd_tls *tls);

/*
 * Run the server side of the handshake on fd (blocking; the socket's receive
 * timeout bounds it). Returns 0 with *out set, or -errno (message set).
 */
int nbd_tls_accept(struct nbd_tls *tls, int fd, struct nbd_tls_conn **out);
/* Read up to n bytes: > 0 bytes read, 0 at EOF, -errno on error. */
ssize_t nbd_tls_read(struct nbd_tls_conn *c, void *buf, size_t n);
/* Write all n bytes: 0 or -errno. Not concurrent with itself. */
int nbd_tls_write(struct nbd_tls_conn *c, const void *buf, size_t n);
/* Send close_notify (best effort) and free; the fd stays open. */
void nbd_tls_close(struct nbd_tls_conn *c);

#endif
