/* SPDX-License-Identifier: MIT */
/*
 * img-nbd: serve disk images over NBD. The command line follows qemu-nbd
 * (-r -x -k -p -b -t -e -f -A -B -D --fork --pid-file --discard
 * --detect-zeroes --cache --object tls-creds-x509/tls-creds-psk/secret
 * --tls-creds --image-opts)
 * so that tools which start qemu-nbd can start img-nbd, plus --export
 * NAME=IMAGE / --export-ro NAME=IMAGE for several exports, --tls-cert,
 * --tls-key, --tls-ca, --tls-psk-file, --handshake-timeout and --threads.
 * This file parses options, sets up the listening sockets (TCP, unix, or
 * systemd's LISTEN_FDS), forks with a readiness pipe when asked, opens the
 * images and hands everything to nbd-server.c; SIGTERM and SIGINT stop the
 * server, which drains in-flight requests and closes the images cleanly.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "img.h"
#include "nbd-server.h"
#include "nbd-tls.h"

#define MAX_LISTEN 16
#define MAX_OBJECTS 8

struct export_arg {
	const char *name;
	const char *path;
	bool read_only;
	const char *snapshot; /* -l: serve this internal snapshot */
};

struct tls_object {
	char *id;
	bool psk;
	char *dir;
	bool verify_peer;
};

struct cfg {
	const char *export_name;
	const char *description;
	const char *socket_path;
	const char *port;
	const char *bind_addr;
	const char *format;
	const char *pid_file;
	const char *bitmap;
	const char *snapshot;
	const char *tls_creds;
	struct nbd_tls_opts tls;
	char *tls_paths[3]; /* what resolve_tls() allocated */
	bool read_only;
	bool fork;
	bool snapshot_exports;
	bool image_opts; /* image arguments are qemu's image options */
	unsigned open_flags;
	struct export_arg *exports;
	size_t n_exports;
	struct tls_object objects[MAX_OBJECTS];
	size_t n_objects;
	struct nbd_server_opts srv;
};

static struct nbd_server *g_server;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: img-nbd [OPTIONS] IMAGE\n"
		"       img-nbd [OPTIONS] --export NAME=IMAGE [--export ...]\n"
		"Serve a disk image over NBD.\n\n"
		"  -p, --port=PORT          TCP port (default 10809)\n"
		"  -b, --bind=ADDR          address to listen on (default "
		"0.0.0.0)\n"
		"  -k, --socket=PATH        unix socket instead of TCP\n"
		"  -x, --export-name=NAME   export name (default \"\")\n"
		"  -D, --description=TEXT   export description\n"
		"  -r, --read-only          export read-only\n"
		"  -f, --format=FMT         image format (default: probe)\n"
		"  -l, --load-snapshot=SNAP serve an internal snapshot "
		"(read-only)\n"
		"  -A, --allocation-depth   offer qemu:allocation-depth\n"
		"  -B, --bitmap=NAME        offer qemu:dirty-bitmap:NAME\n"
		"  -t, --persistent         keep serving after the last "
		"client\n"
		"  -e, --shared=N           at most N clients (default 100)\n"
		"      --export NAME=IMAGE  add a writable export (repeatable)\n"
		"      --export-ro NAME=IMAGE  add a read-only export\n"
		"      --snapshot-exports   also serve each internal snapshot "
		"of an export\n"
		"                           read-only, as NAME@SNAPSHOT\n"
		"      --discard=ignore|unmap\n"
		"      --detect-zeroes=off|on|unmap\n"
		"      --cache=writeback|none|unsafe|directsync|writethrough\n"
		"      --fork               run in the background once "
		"listening\n"
		"      --pid-file=PATH      write the server's pid\n"
		"      --object tls-creds-x509,id=ID,dir=DIR[,verify-peer=on|"
		"off]\n"
		"      --object tls-creds-psk,id=ID,dir=DIR\n"
		"      --object secret,id=ID,file=PATH[,format=raw|base64]\n"
		"      --image-opts         images are driver=FMT,"
		"file.filename=PATH\n"
		"                           [,encrypt.key-secret=ID]\n"
		"      --tls-creds=ID       require TLS with object ID\n"
		"      --tls-cert=PEM --tls-key=PEM [--tls-ca=PEM]\n"
		"      --tls-psk-file=FILE  (identity:hexkey lines)\n"
		"      --untrusted          the images come from others: refuse "
		"references to\n"
		"                           other files, cap metadata memory\n"
		"      --handshake-timeout=SECONDS (default 10)\n"
		"      --threads=N          pool threads per connection for "
		"requests that\n"
		"                           need metadata work (default 2 per "
		"CPU; 0: run\n"
		"                           requests on each connection's "
		"thread, one at a time)\n"
		"  -h, --help  -V, --version\n");
}

static int die(const char *msg)
{
	fprintf(stderr, "img-nbd: %s\n", msg);
	return 1;
}

static int parse_object(struct cfg *cfg, const char *spec)
{
	struct img_kv *kv = NULL;
	size_t n = 0;
	struct tls_object *o;
	const char *type;
	int ret;

	if (img_kv_parse(spec, &kv, &n) < 0 || !n) {
		img_kv_free(kv, n);
		return img_error(-EINVAL,
				 "--object %s: expected TYPE,key=value,...",
				 spec);
	}
	type = kv[0].key;
	if (!strcmp(type, "secret") ||
	    (!strcmp(type, "qom-type") && kv[0].value &&
	     !strcmp(kv[0].value, "secret"))) {
		img_kv_free(kv, n);
		return img_secret_object(spec);
	}
	if (strcmp(type, "tls-creds-psk") && strcmp(type, "tls-creds-x509")) {
		/* The message is built before kv (which type points into)
		 * goes. */
		ret = img_error(-EINVAL, "--object: unsupported type '%s'",
				type);
		img_kv_free(kv, n);
		return ret;
	}
	if (cfg->n_objects == MAX_OBJECTS) {
		img_kv_free(kv, n);
		return img_error(-EINVAL, "too many --object options");
	}
	o = &cfg->objects[cfg->n_objects];
	memset(o, 0, sizeof(*o));
	o->verify_peer = true; /* qemu's default for a server endpoint */
	o->psk = !strcmp(type, "tls-creds-psk");
	for (size_t i = 1; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].value ? kv[i].value : "";

		if (!strcmp(k, "id"))
			o->id = strdup(v);
		else if (!strcmp(k, "dir"))
			o->dir = strdup(v);
		else if (!strcmp(k, "verify-peer"))
			o->verify_peer = !strcmp(v, "on") ||
					 !strcmp(v, "yes") ||
					 !strcmp(v, "true");
		else if (!strcmp(k, "endpoint")) {
			if (strcmp(v, "server")) {
				img_kv_free(kv, n);
				return img_error(-EINVAL, "--object: endpoint "
							  "must be server");
			}
		} else if (strcmp(k, "username") && strcmp(k, "priority")) {
			ret = img_error(-EINVAL, "--object: unknown key '%s'",
					k);
			img_kv_free(kv, n);
			return ret;
		}
	}
	img_kv_free(kv, n);
	if (!o->id || !o->dir)
		return img_error(-EINVAL,
				 "--object %s: needs id= and dir=", spec);
	cfg->n_objects++;
	return 0;
}

static char *join(const char *dir, const char *file)
{
	char *s;

	if (asprintf(&s, "%s/%s", dir, file) < 0)
		return NULL;
	return s;
}

/* Resolve --tls-creds ID into cfg->tls (paths kept in cfg->tls_paths). */
static int resolve_tls(struct cfg *cfg)
{
	for (size_t i = 0; i < cfg->n_objects; i++) {
		struct tls_object *o = &cfg->objects[i];

		if (strcmp(o->id, cfg->tls_creds))
			continue;
		if (o->psk) {
			cfg->tls.psk_file = cfg->tls_paths[0] =
				join(o->dir, "keys.psk");
		} else {
			cfg->tls.cert = cfg->tls_paths[0] =
				join(o->dir, "server-cert.pem");
			cfg->tls.key = cfg->tls_paths[1] =
				join(o->dir, "server-key.pem");
			cfg->tls.ca = cfg->tls_paths[2] =
				join(o->dir, "ca-cert.pem");
			cfg->tls.verify_peer = o->verify_peer;
		}
		if (!cfg->tls_paths[0])
			return img_error(-ENOMEM, "out of memory");
		return 0;
	}
	return img_error(-EINVAL, "--tls-creds %s: no such --object",
			 cfg->tls_creds);
}

static int add_export(struct cfg *cfg, const char *arg, bool ro)
{
	const char *eq = strchr(arg, '=');
	struct export_arg *grown;

	if (!eq || !eq[1])
		return img_error(-EINVAL, "--export %s: expected NAME=IMAGE",
				 arg);
	grown = realloc(cfg->exports, sizeof(*grown) * (cfg->n_exports + 1));
	if (!grown)
		return img_error(-ENOMEM, "out of memory");
	cfg->exports = grown;
	grown[cfg->n_exports].name = strndup(arg, eq - arg);
	grown[cfg->n_exports].path = eq + 1;
	grown[cfg->n_exports].read_only = ro;
	grown[cfg->n_exports].snapshot = NULL;
	cfg->n_exports++;
	return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		return img_error(-EINVAL, "invalid number '%s'", s);
	*out = (unsigned)v;
	return 0;
}

enum {
	OPT_FORK = 256,
	OPT_PID_FILE,
	OPT_DISCARD,
	OPT_DETECT_ZEROES,
	OPT_EXPORT,
	OPT_EXPORT_RO,
	OPT_OBJECT,
	OPT_IMAGE_OPTS,
	OPT_TLS_CREDS,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_CA,
	OPT_TLS_PSK,
	OPT_CACHE,
	OPT_AIO,
	OPT_HS_TIMEOUT,
	OPT_THREADS,
	OPT_SNAPSHOT_EXPORTS,
	OPT_UNTRUSTED,
};

static const struct option long_opts[] = {
	{ "port", required_argument, NULL, 'p' },
	{ "bind", required_argument, NULL, 'b' },
	{ "socket", required_argument, NULL, 'k' },
	{ "export-name", required_argument, NULL, 'x' },
	{ "description", required_argument, NULL, 'D' },
	{ "read-only", no_argument, NULL, 'r' },
	{ "format", required_argument, NULL, 'f' },
	{ "load-snapshot", required_argument, NULL, 'l' },
	{ "allocation-depth", no_argument, NULL, 'A' },
	{ "bitmap", required_argument, NULL, 'B' },
	{ "persistent", no_argument, NULL, 't' },
	{ "shared", required_argument, NULL, 'e' },
	{ "nocache", no_argument, NULL, 'n' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ "fork", no_argument, NULL, OPT_FORK },
	{ "pid-file", required_argument, NULL, OPT_PID_FILE },
	{ "discard", required_argument, NULL, OPT_DISCARD },
	{ "detect-zeroes", required_argument, NULL, OPT_DETECT_ZEROES },
	{ "export", required_argument, NULL, OPT_EXPORT },
	{ "export-ro", required_argument, NULL, OPT_EXPORT_RO },
	{ "object", required_argument, NULL, OPT_OBJECT },
	{ "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
	{ "tls-creds", required_argument, NULL, OPT_TLS_CREDS },
	{ "tls-cert", required_argument, NULL, OPT_TLS_CERT },
	{ "tls-key", required_argument, NULL, OPT_TLS_KEY },
	{ "tls-ca", required_argument, NULL, OPT_TLS_CA },
	{ "tls-psk-file", required_argument, NULL, OPT_TLS_PSK },
	{ "cache", required_argument, NULL, OPT_CACHE },
	{ "aio", required_argument, NULL, OPT_AIO },
	{ "handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "snapshot-exports", no_argument, NULL, OPT_SNAPSHOT_EXPORTS },
	{ "untrusted", no_argument, NULL, OPT_UNTRUSTED },
	{ NULL, 0, NULL, 0 },
};

static int parse_cache(struct cfg *cfg, const char *mode)
{
	cfg->open_flags &= ~(IMG_OPEN_DIRECT | IMG_OPEN_UNSAFE);
	if (!strcmp(mode, "none") || !strcmp(mode, "directsync"))
		cfg->open_flags |= IMG_OPEN_DIRECT;
	else if (!strcmp(mode, "unsafe"))
		cfg->open_flags |= IMG_OPEN_UNSAFE;
	else if (strcmp(mode, "writeback") && strcmp(mode, "writethrough"))
		return img_error(-EINVAL, "--cache: unknown mode '%s'", mode);
	return 0;
}

/* Returns 0, 1 for an error (message printed), 2 for --help/--version. */
static int parse_args(int argc, char **argv, struct cfg *cfg)
{
	bool threads_set = false;
	int ch, ret = 0;

	cfg->port = "10809";
	cfg->bind_addr = "0.0.0.0";
	cfg->export_name = "";
	cfg->srv.max_conns = 100;
	cfg->srv.handshake_timeout = 10;
	while ((ch = getopt_long(argc, argv, "p:b:k:x:D:rf:l:AB:te:nvhV",
				 long_opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			cfg->port = optarg;
			break;
		case 'b':
			cfg->bind_addr = optarg;
			break;
		case 'k':
			cfg->socket_path = optarg;
			break;
		case 'x':
			cfg->export_name = optarg;
			break;
		case 'D':
			cfg->description = optarg;
			break;
		case 'r':
			cfg->read_only = true;
			break;
		case 'f':
			cfg->format = optarg;
			break;
		case 'l':
			cfg->snapshot = optarg;
			break;
		case 'A':
			cfg->srv.allocation_depth = true;
			break;
		case 'B':
			cfg->bitmap = optarg;
			break;
		case 't':
			cfg->srv.persistent = true;
			break;
		case 'e':
			ret = parse_uint(optarg, 100000, &cfg->srv.max_conns);
			if (!ret && !cfg->srv.max_conns)
				ret = img_error(-EINVAL, "--shared must be "
							 "at least 1");
			break;
		case 'n':
			cfg->open_flags |= IMG_OPEN_DIRECT;
			break;
		case 'v':
			break;
		case 'h':
			usage(stdout);
			return 2;
		case 'V':
			printf("img-nbd 0.1.0\n");
			return 2;
		case OPT_FORK:
			cfg->fork = true;
			break;
		case OPT_PID_FILE:
			cfg->pid_file = optarg;
			break;
		case OPT_DISCARD:
			if (!strcmp(optarg, "unmap") || !strcmp(optarg, "on"))
				cfg->srv.discard = true;
			else if (!strcmp(optarg, "ignore") ||
				 !strcmp(optarg, "off"))
				cfg->srv.discard = false;
			else
				ret = img_error(-EINVAL,
						"--discard: unknown "
						"mode '%s'",
						optarg);
			/* As qemu-nbd: freed space goes back to the host. */
			cfg->open_flags &= ~IMG_OPEN_UNMAP;
			if (cfg->srv.discard)
				cfg->open_flags |= IMG_OPEN_UNMAP;
			break;
		case OPT_DETECT_ZEROES:
			if (!strcmp(optarg, "off"))
				cfg->srv.detect_zeroes = NBD_DZ_OFF;
			else if (!strcmp(optarg, "on"))
				cfg->srv.detect_zeroes = NBD_DZ_ON;
			else if (!strcmp(optarg, "unmap"))
				cfg->srv.detect_zeroes = NBD_DZ_UNMAP;
			else
				ret = img_error(-EINVAL,
						"--detect-zeroes: "
						"unknown mode '%s'",
						optarg);
			break;
		case OPT_EXPORT:
		case OPT_EXPORT_RO:
			ret = add_export(cfg, optarg, ch == OPT_EXPORT_RO);
			break;
		case OPT_OBJECT:
			ret = parse_object(cfg, optarg);
			break;
		case OPT_IMAGE_OPTS:
			cfg->image_opts = true;
			break;
		case OPT_TLS_CREDS:
			cfg->tls_creds = optarg;
			break;
		case OPT_TLS_CERT:
			cfg->tls.cert = optarg;
			break;
		case OPT_TLS_KEY:
			cfg->tls.key = optarg;
			break;
		case OPT_TLS_CA:
			cfg->tls.ca = optarg;
			cfg->tls.verify_peer = true;
			break;
		case OPT_TLS_PSK:
			cfg->tls.psk_file = optarg;
			break;
		case OPT_CACHE:
			ret = parse_cache(cfg, optarg);
			break;
		case OPT_UNTRUSTED:
			cfg->open_flags |= IMG_OPEN_UNTRUSTED;
			break;
		case OPT_SNAPSHOT_EXPORTS:
			cfg->snapshot_exports = true;
			break;
		case OPT_AIO:
			break; /* accepted for qemu-nbd compatibility */
		case OPT_HS_TIMEOUT:
			ret = parse_uint(optarg, 3600,
					 &cfg->srv.handshake_timeout);
			break;
		case OPT_THREADS:
			ret = parse_uint(optarg, 64, &cfg->srv.threads);
			threads_set = true;
			break;
		default:
			usage(stderr);
			return 1;
		}
		if (ret < 0)
			return die(img_last_error());
	}
	if (optind < argc) {
		if (optind + 1 != argc)
			return die("one IMAGE argument at most (use --export "
				   "for more)");
		struct export_arg *grown = realloc(
			cfg->exports, sizeof(*grown) * (cfg->n_exports + 1));
		if (!grown)
			return die("out of memory");
		memmove(grown + 1, grown, sizeof(*grown) * cfg->n_exports);
		grown[0].name = strdup(cfg->export_name);
		grown[0].path = argv[optind];
		grown[0].read_only = cfg->read_only || cfg->snapshot;
		grown[0].snapshot = cfg->snapshot;
		cfg->exports = grown;
		cfg->n_exports++;
	}
	if (!cfg->n_exports)
		return die("no image to serve (try --help)");
	if (!threads_set)
		cfg->srv.threads = 2 * (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	if (cfg->tls_creds && resolve_tls(cfg) < 0)
		return die(img_last_error());
	return 0;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return img_error(-ENAMETOOLONG, "socket path too long: %s",
				 path);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return img_error(-errno, "socket: %s", strerror(errno));
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, 128) < 0) {
		int e = errno;

		close(fd);
		return img_error(-e, "cannot listen on %s: %s", path,
				 strerror(e));
	}
	return fd;
}

static int listen_tcp(const char *addr, const char *port, int *fds, size_t *n)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *res, *ai;
	int ret = getaddrinfo(addr, port, &hints, &res), last = 0;

	if (ret)
		return img_error(-EINVAL, "cannot resolve %s:%s: %s", addr,
				 port, gai_strerror(ret));
	for (ai = res; ai && *n < MAX_LISTEN; ai = ai->ai_next) {
		int one = 1;
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
				ai->ai_protocol);

		if (fd < 0) {
			last = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
		    listen(fd, 128) < 0) {
			last = errno;
			close(fd);
			continue;
		}
		fds[(*n)++] = fd;
	}
	freeaddrinfo(res);
	if (!*n)
		return img_error(-last, "cannot listen on %s:%s: %s", addr,
				 port, strerror(last));
	return 0;
}

/* systemd socket activation: LISTEN_PID is us, LISTEN_FDS sockets at 3. */
static int listen_activation(int *fds, size_t *n)
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	unsigned count;

	if (!pid || !nfds || atol(pid) != (long)getpid())
		return 0;
	if (parse_uint(nfds, MAX_LISTEN, &count) < 0 || !count)
		return img_error(-EINVAL, "LISTEN_FDS=%s: expected 1..%d", nfds,
				 MAX_LISTEN);
	for (unsigned i = 0; i < count; i++) {
		fcntl(3 + (int)i, F_SETFD, FD_CLOEXEC);
		fds[(*n)++] = 3 + (int)i;
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return 1;
}

struct export_list {
	struct nbd_export *v;
	size_t n, cap;
};

static void export_list_free(struct export_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		img_close(l->v[i].img);
		free(l->v[i].name);
		free(l->v[i].description);
	}
	free(l->v);
}

/*
 * --image-opts: spec is qemu's driver=FMT,file.filename=PATH[,
 * encrypt.key-secret=ID] (file.driver=file and encrypt.format=luks change
 * nothing here). Sets *path and *format from it and leaves the options for
 * img_open() in *kv.
 */
static int parse_image_opts(const char *spec, struct img_kv **kv, size_t *n,
			    const char **path, const char **format)
{
	int ret = img_kv_parse(spec, kv, n);

	for (size_t i = 0; i < *n && ret >= 0; i++) {
		const char *k = (*kv)[i].key, *v = (*kv)[i].value;

		if (!strcmp(k, "file.filename"))
			*path = v;
		else if (!strcmp(k, "driver"))
			*format = v;
		else if (strcmp(k, "encrypt.key-secret") &&
			 strcmp(k, "encrypt.format") &&
			 (strcmp(k, "file.driver") || !v || strcmp(v, "file")))
			ret = img_error(-EINVAL,
					"--image-opts: unsupported option '%s'",
					k);
	}
	if (ret >= 0 && !*path)
		ret = img_error(-EINVAL, "--image-opts: no file.filename");
	return ret;
}

/* Open path (read-only at snapshot when given) as export name. */
static int add_open_export(struct cfg *cfg, struct export_list *l,
			   const char *name, const char *path, bool ro,
			   const char *snapshot)
{
	struct img_open_opts oo = {
		.format = cfg->format,
		/* A snapshot view shares the image with its writable
		 * export (snapshots do not change under it). */
		.flags = cfg->open_flags | (ro ? IMG_OPEN_RDONLY : 0) |
			 (snapshot ? IMG_OPEN_SHARED : 0),
		.snapshot = snapshot,
	};
	struct nbd_export *e;
	int ret;

	for (size_t k = 0; k < l->n; k++)
		if (!strcmp(l->v[k].name, name))
			return img_error(-EINVAL,
					 "export name '%s' given twice", name);
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct nbd_export *v = realloc(l->v, sizeof(*v) * cap);

		if (!v)
			return img_error(-ENOMEM, "out of memory");
		l->v = v;
		l->cap = cap;
	}
	e = &l->v[l->n];
	memset(e, 0, sizeof(*e));
	if (cfg->image_opts) {
		struct img_kv *kv = NULL;
		size_t n = 0;
		const char *file = NULL;

		ret = parse_image_opts(path, &kv, &n, &file, &oo.format);
		oo.opts = kv;
		oo.n_opts = n;
		if (ret >= 0)
			ret = img_open(file, &oo, &e->img);
		img_kv_free(kv, n);
	} else {
		ret = img_open(path, &oo, &e->img);
	}
	if (ret < 0)
		return ret;
	e->name = strdup(name);
	e->description = cfg->description ? strdup(cfg->description) : NULL;
	e->read_only = ro;
	e->bitmap = cfg->bitmap;
	l->n++;
	if (!e->name)
		return img_error(-ENOMEM, "out of memory");
	if (cfg->bitmap) {
		bool dirty;
		uint64_t run;

		ret = img_bitmap_dirty(e->img, cfg->bitmap, 0, 1, &dirty, &run);
		if (ret < 0) {
			char msg[512];

			snprintf(msg, sizeof(msg), "%s", img_last_error());
			return img_error(ret, "-B %s: %s", cfg->bitmap, msg);
		}
	}
	return 0;
}

/* --snapshot-exports: NAME@SNAP for each internal snapshot of export i. */
static int add_snapshot_exports(struct cfg *cfg, struct export_list *l,
				size_t i)
{
	const struct export_arg *a = &cfg->exports[i];
	struct img_snapshot_info *sn;
	size_t n;
	int ret = img_snapshot_list(l->v[l->n - 1].img, &sn, &n);

	if (ret == -ENOTSUP)
		return 0;
	if (ret < 0)
		return ret;
	for (size_t k = 0; k < n && ret >= 0; k++) {
		const char *tag = sn[k].name[0] ? sn[k].name : sn[k].id;
		char *name;

		if (asprintf(&name, "%s@%s", a->name, tag) < 0) {
			ret = img_error(-ENOMEM, "out of memory");
			break;
		}
		ret = add_open_export(cfg, l, name, a->path, true, sn[k].id);
		free(name);
	}
	img_snapshot_list_free(sn, n);
	return ret;
}

static int open_exports(struct cfg *cfg, struct nbd_export **out, size_t *n)
{
	struct export_list l = { 0 };

	for (size_t i = 0; i < cfg->n_exports; i++) {
		const struct export_arg *a = &cfg->exports[i];
		int ret = add_open_export(cfg, &l, a->name, a->path,
					  a->read_only, a->snapshot);

		if (ret >= 0 && cfg->snapshot_exports && !a->snapshot)
			ret = add_snapshot_exports(cfg, &l, i);
		if (ret < 0) {
			char msg[512];

			snprintf(msg, sizeof(msg), "%s", img_last_error());
			ret = img_error(ret, "%s: %s", a->path, msg);
			export_list_free(&l);
			return ret;
		}
	}
	*out = l.v;
	*n = l.n;
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	if (g_server)
		nbd_server_stop(g_server);
}

static int write_pid_file(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return img_error(-errno, "cannot write pid file %s: %s", path,
				 strerror(errno));
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f))
		return img_error(-EIO, "cannot write pid file %s", path);
	return 0;
}

/* In --fork mode: the parent waits for one status byte from the child. */
static int fork_and_wait(int *ready_fd)
{
	int p[2];
	pid_t pid;
	char st;

	if (pipe2(p, O_CLOEXEC) < 0)
		return img_error(-errno, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		return img_error(-errno, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		setsid();
		*ready_fd = p[1];
		return 0;
	}
	close(p[1]);
	if (read(p[0], &st, 1) == 1 && st == 0)
		_exit(0);
	_exit(1);
}

static void signal_ready(int *ready_fd, char status)
{
	int fd;

	if (*ready_fd < 0)
		return;
	if (write(*ready_fd, &status, 1) != 1) {
		/* The parent is gone: nothing to tell. */
	}
	close(*ready_fd);
	*ready_fd = -1;
	if (status)
		return;
	fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		close(fd);
	}
}

int main(int argc, char **argv)
{
	struct cfg cfg = { 0 };
	struct nbd_export *exports = NULL;
	struct nbd_tls *tls = NULL;
	int fds[MAX_LISTEN], ready_fd = -1, ret;
	size_t n_fds = 0, n_exports = 0;
	struct sigaction sa = { .sa_handler = on_signal };
	bool unix_sock = false;

	ret = parse_args(argc, argv, &cfg);
	if (ret) {
		ret = ret == 2 ? 0 : 1;
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	if (cfg.tls.psk_file || cfg.tls.cert || cfg.tls.key) {
		if (nbd_tls_new(&cfg.tls, &tls) < 0) {
			ret = die(img_last_error());
			goto out;
		}
		cfg.srv.tls = tls;
	}
	ret = listen_activation(fds, &n_fds);
	if (ret == 0) {
		if (cfg.socket_path) {
			ret = listen_unix(cfg.socket_path);
			if (ret >= 0) {
				fds[n_fds++] = ret;
				unix_sock = true;
			}
		} else {
			ret = listen_tcp(cfg.bind_addr, cfg.port, fds, &n_fds);
		}
	}
	if (ret < 0 || (cfg.fork && fork_and_wait(&ready_fd) < 0)) {
		ret = die(img_last_error());
		goto out;
	}

	ret = open_exports(&cfg, &exports, &n_exports);
	if (ret >= 0)
		ret = nbd_server_new(&cfg.srv, exports, n_exports, &g_server);
	if (ret >= 0 && cfg.pid_file)
		ret = write_pid_file(cfg.pid_file);
	if (ret < 0) {
		fprintf(stderr, "img-nbd: %s\n", img_last_error());
		signal_ready(&ready_fd, 1);
		nbd_server_free(g_server);
		ret = 1;
		goto out;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal_ready(&ready_fd, 0);

	ret = nbd_server_run(g_server, fds, n_fds) < 0 ? 1 : 0;
	if (nbd_server_free(g_server) < 0)
		ret = 1;
	g_server = NULL;
	if (cfg.pid_file)
		unlink(cfg.pid_file);
out:
	for (size_t i = 0; i < n_fds; i++)
		close(fds[i]);
	if (unix_sock)
		unlink(cfg.socket_path);
	nbd_tls_free(tls);
	for (size_t i = 0; i < cfg.n_exports; i++)
		free((char *)cfg.exports[i].name);
	free(cfg.exports);
	for (size_t i = 0; i < cfg.n_objects; i++) {
		free(cfg.objects[i].id);
		free(cfg.objects[i].dir);
	}
	for (int i = 0; i < 3; i++)
		free(cfg.tls_paths[i]);
	return ret;
}
