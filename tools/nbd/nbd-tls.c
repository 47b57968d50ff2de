/* SPDX-License-Identifier: MIT */
/*
 * OpenSSL glue for img-nbd (see nbd-tls.h). x509: the server certificate
 * and key, and with a CA the client certificate is required and verified.
 * PSK: identities and keys from a qemu-style keys.psk file, looked up by the
 * identity the client sends (TLS 1.2 PSK cipher suites and TLS 1.3 external
 * PSKs through OpenSSL's PSK server callback). PSKs are held as img
 * secrets (locked, wiped when the context is freed), and the context holds
 * libimg's core guard: OpenSSL keeps copies of the PSK, the private key and
 * every session's keys on its heap, so cores carry no anonymous memory while
 * the context lives. TLS 1.2 is the minimum version.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "img.h"
#include "nbd-tls.h"

#define MAX_PSK_LEN 256

struct psk {
	char *identity;
	struct img_secret *key;
};

struct nbd_tls {
	SSL_CTX *ctx;
	bool guarded;
	struct psk *psks;
	size_t n_psks;
};

struct nbd_tls_conn {
	SSL *ssl;
};

static const char *ssl_err(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();

	if (!e)
		return "unknown error";
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Parse one "identity:hexkey" line into p. */
static int parse_psk_line(char *line, struct psk *p)
{
	char *colon = strchr(line, ':');
	unsigned char key[MAX_PSK_LEN];
	size_t hex_len, key_len;
	int ret = 0;

	if (!colon || colon == line)
		return -EINVAL;
	*colon = 0;
	hex_len = strcspn(colon + 1, "\r\n");
	if (!hex_len || hex_len % 2 || hex_len / 2 > MAX_PSK_LEN)
		return -EINVAL;
	key_len = hex_len / 2;
	for (size_t i = 0; i < key_len && !ret; i++) {
		int hi = hexval(colon[1 + 2 * i]),
		    lo = hexval(colon[2 + 2 * i]);

		if (hi < 0 || lo < 0)
			ret = -EINVAL;
		key[i] = (unsigned char)(hi << 4 | lo);
	}
	if (!ret)
		ret = img_secret_new(key, key_len, &p->key);
	OPENSSL_cleanse(key, sizeof(key));
	if (ret < 0)
		return ret;
	p->identity = strdup(line);
	return p->identity ? 0 : -ENOMEM;
}

static int load_psks(struct nbd_tls *t, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	unsigned lineno = 0;
	int ret = 0;

	if (!f)
		return img_error(-errno, "tls: cannot open PSK file %s: %s",
				 path, strerror(errno));
	/* No stdio buffer: it would keep a copy of the keys, unwiped. */
	setvbuf(f, NULL, _IONBF, 0);
	while (fgets(line, sizeof(line), f)) {
		struct psk *grown;

		lineno++;
		if (line[0] == '\n' || line[0] == '#')
			continue;
		grown = realloc(t->psks, sizeof(*grown) * (t->n_psks + 1));
		if (!grown) {
			ret = img_error(-ENOMEM, "tls: out of memory");
			break;
		}
		t->psks = grown;
		memset(&t->psks[t->n_psks], 0, sizeof(*grown));
		ret = parse_psk_line(line, &t->psks[t->n_psks++]);
		if (ret < 0) {
			ret = img_error(ret,
					"tls: %s line %u: expected "
					"identity:hexkey",
					path, lineno);
			break;
		}
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (!ret && !t->n_psks)
		ret = img_error(-EINVAL, "tls: no keys in PSK file %s", path);
	return ret;
}

static unsigned int psk_server_cb(SSL *ssl, const char *identity,
				  unsigned char *psk, unsigned int max_psk_len)
{
	const struct nbd_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

	if (!identity)
		return 0;
	for (size_t i = 0; i < t->n_psks; i++) {
		const struct psk *p = &t->psks[i];
		const uint8_t *key;
		size_t len;

		if (strcmp(p->identity, identity))
			continue;
		key = img_secret_data(p->key, &len);
		if (len > max_psk_len)
			continue;
		memcpy(psk, key, len);
		return (unsigned int)len;
	}
	return 0;
}

int nbd_tls_new(const struct nbd_tls_opts *o, struct nbd_tls **out)
{
	struct nbd_tls *t = calloc(1, sizeof(*t));
	int ret = 0;

	if (!t)
		return img_error(-ENOMEM, "tls: out of memory");
	ret = img_core_guard_acquire();
	if (ret < 0) {
		free(t);
		return ret;
	}
	t->guarded = true;
	t->ctx = SSL_CTX_new(TLS_server_method());
	if (!t->ctx) {
		ret = img_error(-ENOMEM, "tls: %s", ssl_err());
		goto fail;
	}
	SSL_CTX_set_app_data(t->ctx, t);
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION);
	if (o->psk_file) {
		ret = load_psks(t, o->psk_file);
		if (ret < 0)
			goto fail;
		SSL_CTX_set_psk_server_callback(t->ctx, psk_server_cb);
		if (!SSL_CTX_set_cipher_list(t->ctx, "PSK:DEFAULT")) {
			ret = img_error(-EINVAL, "tls: %s", ssl_err());
			goto fail;
		}
	} else {
		if (!o->cert || !o->key) {
			ret = img_error(-EINVAL,
					"tls: x509 needs a certificate "
					"and a key");
			goto fail;
		}
		if (SSL_CTX_use_certificate_chain_file(t->ctx, o->cert) != 1) {
			ret = img_error(-EINVAL, "tls: certificate %s: %s",
					o->cert, ssl_err());
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(t->ctx, o->key,
						SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(t->ctx) != 1) {
			ret = img_error(-EINVAL, "tls: key %s: %s", o->key,
					ssl_err());
			goto fail;
		}
		if (o->ca && o->verify_peer) {
			if (SSL_CTX_load_verify_locations(t->ctx, o->ca,
							  NULL) != 1) {
				ret = img_error(-EINVAL, "tls: CA %s: %s",
						o->ca, ssl_err());
				goto fail;
			}
			SSL_CTX_set_verify(
				t->ctx,
				SSL_VERIFY_PEER |
					SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				NULL);
		}
	}
	*out = t;
	return 0;
fail:
	nbd_tls_free(t);
	return ret;
}

void nbd_tls_free(struct nbd_tls *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_psks; i++) {
		img_secret_free(t->psks[i].key);
		free(t->psks[i].identity);
	}
	free(t->psks);
	SSL_CTX_free(t->ctx);
	if (t->guarded)
		img_core_guard_release();
	free(t);
}

int nbd_tls_accept(struct nbd_tls *t, int fd, struct nbd_tls_conn **out)
{
	struct nbd_tls_conn *c = calloc(1, sizeof(*c));
	int r;

	if (!c)
		return img_error(-ENOMEM, "tls: out of memory");
	c->ssl = SSL_new(t->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
		r = img_error(-ENOMEM, "tls: %s", ssl_err());
		goto fail;
	}
	r = SSL_accept(c->ssl);
	if (r != 1) {
		r = img_error(-EPROTO, "tls: handshake failed: %s", ssl_err());
		goto fail;
	}
	*out = c;
	return 0;
fail:
	SSL_free(c->ssl);
	free(c);
	return r;
}

ssize_t nbd_tls_read(struct nbd_tls_conn *c, void *buf, size_t n)
{
	size_t got = 0;
	int r = SSL_read_ex(c->ssl, buf, n, &got);

	if (r == 1)
		return (ssize_t)got;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		ERR_clear_error();
		return -ETIMEDOUT;
	default:
		ERR_clear_error();
		return -ECONNRESET;
	}
}

int nbd_tls_write(struct nbd_tls_conn *c, const void *buf, size_t n)
{
	while (n) {
		size_t done = 0;

		if (SSL_write_ex(c->ssl, buf, n, &done) != 1) {
			ERR_clear_error();
			return -EPIPE;
		}
		buf = (const char *)buf + done;
		n -= done;
	}
	return 0;
}

void nbd_tls_close(struct nbd_tls_conn *c)
{
	if (!c)
		return;
	SSL_shutdown(c->ssl);
	ERR_clear_error();
	SSL_free(c->ssl);
	free(c);
}
