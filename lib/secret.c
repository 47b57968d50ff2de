/* SPDX-License-Identifier: MIT */
/*
 * Secrets (passphrases) for encrypted images, shared by img, img-nbd and
 * img-fuse: loaded from a file (qemu's --object secret,id=ID,file=PATH), a
 * file descriptor or a terminal prompt without echo, never from argv or the
 * environment. Their bytes live in memory that is mlock'ed where the system
 * allows, excluded from core dumps (MADV_DONTDUMP) and wiped on release; the
 * same allocator holds the key material of lib/crypto-luks.c. Secrets named
 * by id sit in a process-wide registry that encrypt.key-secret=ID options
 * resolve against; the secret registered without an id is the default for
 * every encrypted image that names none.
 *
 * Keeping key material out of core dumps needs more than our own pages:
 * OpenSSL's cipher contexts (the EVP_CIPHER_CTX and the provider's AES
 * context holding both XTS key schedules, whose first round keys are the key
 * bytes), the HMAC states of PBKDF2, stack copies, librados's copy of a
 * cephx key and TLS session keys all sit on the ordinary heap or stack. So
 * while any key material exists (a live img_secure_alloc block, a keyed
 * img_sector_cipher, a Ceph handle, a TLS context: a process-wide count,
 * img_core_guard_acquire/release) the process's
 * /proc/self/coredump_filter is 0: a core still holds the registers, the
 * notes and the list of mappings, but no anonymous memory (heap, stacks,
 * OpenSSL's arenas), whatever core_pattern, suid_dumpable or a core
 * collector does. When the last holder goes the filter is restored to what it
 * was. Without a writable /proc the fallback is a soft RLIMIT_CORE of 1,
 * which the kernel reads as "no core" for files (below one page) and for
 * pipes (its recursion guard); a hard limit of 0 leaves 0: no file core, but
 * a pipe collector would still get one.
 * Cost, measured on OpenSSL 3.0 and Linux 6.18 (2 cores shared, load near
 * 30): reading, zeroing and restoring the filter when the first holder comes
 * and the last goes, 0.1-0.2 ms once per open (PBKDF2 takes milliseconds to
 * seconds); nothing per I/O (reading 256 MiB of a LUKS qcow2 took 1.5-1.7 s
 * of CPU before and after). And crash cores without memory while keys are
 * loaded: a backtrace needs a rerun without the key. Children forked
 * meanwhile inherit the filter.
 *
 * Rejected (measured with a test program, same machine): OpenSSL's secure
 * heap (CRYPTO_secure_malloc_init; 8 MiB took 1-11 ms to set up) is not used
 * by OpenSSL 3.0's AES contexts at all: 0 bytes of it in use after keying
 * XTS, CBC and CTR contexts and copying them (the providers allocate with
 * OPENSSL_zalloc). Routing every OpenSSL allocation into locked
 * MADV_DONTDUMP memory (CRYPTO_set_mem_functions onto the secure heap) works
 * only if installed before OpenSSL's first allocation in the process (a
 * library cannot promise that), puts 240 KiB of unrelated tables into locked
 * memory before the first key, serialises every OpenSSL malloc and free on
 * one lock (14 allocations per keyed XTS cipher) and still misses stacks,
 * librados and freed-but-unwiped blocks (a keyed XTS cipher with two thread
 * copies: 26-35 us against 1-17 us). PR_SET_DUMPABLE 0 (a prctl pair,
 * 12-24 us) leaves cores to suid_dumpable (2, systemd's and apport's
 * default, still pipes them to the collector), gives /proc/PID to root and
 * forbids ptrace by the same user (no gdb -p, strace -p).
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "img-crypto.h"
#include "internal.h"

/* Largest secret accepted (file, fd or prompt). */
#define SECRET_MAX (64u << 10)

struct img_secret {
	uint8_t *data; /* img_secure_alloc'ed, NUL after len */
	size_t len, cap;
	char *id; /* registry name; NULL for the default */
	struct img_secret *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct img_secret *registry;

static size_t page_round(size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (len + page - 1) / page * page;
}

static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long guard_holders;
/* What to restore: the filter, or (no /proc) the core size limit. */
static bool filter_saved;
static unsigned long saved_filter;
static struct rlimit saved_core;

#define CORE_FILTER "/proc/self/coredump_filter"

static int filter_read(unsigned long *value)
{
	char buf[32], *end;
	int fd = open(CORE_FILTER, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	*value = strtoul(buf, &end, 16);
	return end == buf ? -EIO : 0;
}

static int filter_write(unsigned long value)
{
	char buf[32];
	/* The kernel parses with base 0: the file's own "00000033" would be
	 * octal. */
	int len = snprintf(buf, sizeof(buf), "%#lx", value);
	int fd = open(CORE_FILTER, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, buf, (size_t)len);
	close(fd);
	return n == len ? 0 : -EIO;
}

static int guard_on(void)
{
	struct rlimit none;

	filter_saved = filter_read(&saved_filter) == 0 && filter_write(0) == 0;
	if (filter_saved)
		return 0;
	if (getrlimit(RLIMIT_CORE, &saved_core) < 0)
		return img_error(-errno,
				 "secret: cannot keep key material "
				 "out of core dumps: no %s and no "
				 "RLIMIT_CORE",
				 CORE_FILTER);
	/* 1, not 0: pipes ignore 0 but take 1 as "no core"; files need at
	 * least a page. Raising a soft 0 to 1 is thus no loss. */
	none = saved_core;
	none.rlim_cur = saved_core.rlim_max ? 1 : 0;
	if (setrlimit(RLIMIT_CORE, &none) < 0)
		return img_error(-errno,
				 "secret: cannot keep key material "
				 "out of core dumps: %s",
				 strerror(errno));
	return 0;
}

static void guard_off(void)
{
	if (filter_saved)
		(void)filter_write(saved_filter);
	else
		(void)setrlimit(RLIMIT_CORE, &saved_core);
}

int img_core_guard_acquire(void)
{
	int ret = 0;

	pthread_mutex_lock(&guard_lock);
	if (guard_holders == 0)
		ret = guard_on();
	if (ret == 0)
		guard_holders++;
	pthread_mutex_unlock(&guard_lock);
	return ret;
}

void img_core_guard_release(void)
{
	pthread_mutex_lock(&guard_lock);
	if (guard_holders && --guard_holders == 0)
		guard_off();
	pthread_mutex_unlock(&guard_lock);
}

void *img_secure_alloc(size_t len)
{
	size_t size = page_round(len ? len : 1);
	void *p;

	if (img_core_guard_acquire() < 0)
		return NULL;
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		img_core_guard_release();
		img_error(-ENOMEM, "secret: out of memory");
		return NULL;
	}
	/* Best effort: RLIMIT_MEMLOCK may be small; the data stays usable. */
	(void)mlock(p, size);
	(void)madvise(p, size, MADV_DONTDUMP);
	return p;
}

void img_secure_free(void *p, size_t len)
{
	size_t size = page_round(len ? len : 1);

	if (!p)
		return;
	OPENSSL_cleanse(p, size);
	(void)munlock(p, size);
	munmap(p, size);
	img_core_guard_release();
}

static int secret_alloc(size_t cap, struct img_secret **out)
{
	struct img_secret *s = calloc(1, sizeof(*s));

	if (!s)
		return img_error(-ENOMEM, "secret: out of memory");
	s->cap = cap;
	s->data = img_secure_alloc(cap + 1);
	if (!s->data) {
		free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

int img_secret_new(const void *data, size_t len, struct img_secret **out)
{
	struct img_secret *s;
	int ret;

	if (len > SECRET_MAX)
		return img_error(-EINVAL, "secret: longer than %u bytes",
				 SECRET_MAX);
	ret = secret_alloc(len, &s);
	if (ret < 0)
		return ret;
	memcpy(s->data, data, len);
	s->len = len;
	*out = s;
	return 0;
}

void img_secret_free(struct img_secret *s)
{
	if (!s)
		return;
	img_secure_free(s->data, s->cap + 1);
	free(s->id);
	free(s);
}

const uint8_t *img_secret_data(const struct img_secret *s, size_t *len)
{
	*len = s->len;
	return s->data;
}

/* Read fd to its end into a new secret. */
static int read_all(int fd, const char *what, struct img_secret **out)
{
	struct img_secret *s;
	int ret;

	ret = secret_alloc(SECRET_MAX, &s);
	if (ret < 0)
		return ret;
	for (;;) {
		ssize_t n = read(fd, s->data + s->len, SECRET_MAX + 1 - s->len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = img_error(-errno, "secret: cannot read %s: %s",
					what, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		s->len += (size_t)n;
		if (s->len > SECRET_MAX) {
			ret = img_error(-EINVAL,
					"secret: %s is longer than %u bytes",
					what, SECRET_MAX);
			break;
		}
	}
	if (ret < 0) {
		img_secret_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

/* Decode s in place from base64 (qemu's format=base64). */
static int decode_base64(struct img_secret *s)
{
	size_t n = s->len, pad = 0;
	uint8_t *tmp;
	int len;

	while (n && (s->data[n - 1] == '\n' || s->data[n - 1] == '\r'))
		n--;
	if (n % 4)
		return img_error(-EINVAL, "secret: invalid base64 data");
	if (n && s->data[n - 1] == '=')
		pad++;
	if (n > 1 && s->data[n - 2] == '=')
		pad++;
	tmp = img_secure_alloc(n);
	if (!tmp)
		return -ENOMEM;
	len = EVP_DecodeBlock(tmp, s->data, (int)n);
	if (len < 0 || (size_t)len < pad) {
		img_secure_free(tmp, n);
		return img_error(-EINVAL, "secret: invalid base64 data");
	}
	OPENSSL_cleanse(s->data, s->cap + 1);
	s->len = (size_t)len - pad;
	memcpy(s->data, tmp, s->len);
	img_secure_free(tmp, n);
	return 0;
}

int img_secret_from_file(const char *path, bool base64, struct img_secret **out)
{
	struct img_secret *s;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return img_error(-errno, "secret: cannot open '%s': %s", path,
				 strerror(errno));
	ret = read_all(fd, path, &s);
	close(fd);
	if (ret == 0 && base64) {
		ret = decode_base64(s);
		if (ret < 0)
			img_secret_free(s);
	}
	if (ret == 0)
		*out = s;
	return ret;
}

int img_secret_from_fd(int fd, struct img_secret **out)
{
	return read_all(fd, "the key file descriptor", out);
}

int img_secret_prompt(const char *prompt, struct img_secret **out)
{
	struct termios old, quiet;
	struct img_secret *s;
	int fd, ret;
	bool echo_off;

	fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return img_error(-ENOTTY, "secret: no terminal to ask for %s",
				 prompt);
	ret = secret_alloc(SECRET_MAX, &s);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	echo_off = tcgetattr(fd, &old) == 0;
	if (echo_off) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		quiet.c_lflag |= ICANON;
		echo_off = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
	}
	if (write(fd, prompt, strlen(prompt)) < 0 || write(fd, ": ", 2) < 0)
		ret = img_error(-errno, "secret: cannot write the prompt");
	while (ret == 0 && s->len < SECRET_MAX) {
		ssize_t n = read(fd, s->data + s->len, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			ret = img_error(-errno, "secret: cannot read: %s",
					strerror(errno));
		if (n <= 0 || s->data[s->len] == '\n')
			break;
		s->len++;
	}
	s->data[s->len] = 0;
	if (echo_off)
		(void)tcsetattr(fd, TCSAFLUSH, &old);
	if (write(fd, "\n", 1) < 0) {
		/* Only cosmetic. */
	}
	close(fd);
	if (ret < 0) {
		img_secret_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

int img_secret_register(const char *id, struct img_secret *s)
{
	struct img_secret **pp;

	if (id) {
		s->id = strdup(id);
		if (!s->id)
			return img_error(-ENOMEM, "secret: out of memory");
	}
	pthread_mutex_lock(&registry_lock);
	for (pp = &registry; *pp; pp = &(*pp)->next) {
		if ((!id && !(*pp)->id) ||
		    (id && (*pp)->id && !strcmp((*pp)->id, id))) {
			pthread_mutex_unlock(&registry_lock);
			free(s->id);
			s->id = NULL;
			return img_error(-EEXIST,
					 "secret: attempt to add duplicate "
					 "secret '%s'",
					 id ? id : "(default)");
		}
	}
	*pp = s;
	pthread_mutex_unlock(&registry_lock);
	return 0;
}

const struct img_secret *img_secret_lookup(const char *id)
{
	struct img_secret *s;

	pthread_mutex_lock(&registry_lock);
	for (s = registry; s; s = s->next)
		if ((!id && !s->id) || (id && s->id && !strcmp(s->id, id)))
			break;
	pthread_mutex_unlock(&registry_lock);
	return s;
}

void img_secret_clear(void)
{
	struct img_secret *s, *next;

	pthread_mutex_lock(&registry_lock);
	s = registry;
	registry = NULL;
	pthread_mutex_unlock(&registry_lock);
	for (; s; s = next) {
		next = s->next;
		img_secret_free(s);
	}
}

int img_secret_object(const char *spec)
{
	const char *qom = NULL, *id = NULL, *file = NULL, *format = NULL;
	struct img_secret *s;
	struct img_kv *kv = NULL;
	size_t n = 0;
	int ret;

	/* "secret,id=..." : the first element names the object type. */
	if (strncmp(spec, "secret,", 7) == 0) {
		qom = "secret";
		spec += 7;
	} else if (strncmp(spec, "qom-type=secret,", 16) == 0) {
		qom = "secret";
		spec += 16;
	}
	if (!qom)
		return img_error(-EINVAL,
				 "secret: only 'secret' objects are supported, "
				 "not '%s'",
				 spec);
	ret = img_kv_parse(spec, &kv, &n);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++) {
		const char *k = kv[i].key, *v = kv[i].value;

		if (!strcmp(k, "id"))
			id = v;
		else if (!strcmp(k, "file"))
			file = v;
		else if (!strcmp(k, "format"))
			format = v;
		else if (!strcmp(k, "data"))
			ret = img_error(
				-EINVAL,
				"secret: data= would put the secret on the "
				"command line; use file=PATH instead");
		else
			ret = img_error(-EINVAL,
					"secret: unsupported property '%s' "
					"(keyid and iv are not supported)",
					k);
		if (ret < 0)
			goto out;
	}
	if (!id || !*id) {
		ret = img_error(-EINVAL, "secret: Parameter 'id' is missing");
		goto out;
	}
	if (!file) {
		ret = img_error(-EINVAL,
				"secret: '%s' needs file=PATH (the secret "
				"is never taken from the command line)",
				id);
		goto out;
	}
	if (format && strcmp(format, "raw") && strcmp(format, "base64")) {
		ret = img_error(-EINVAL, "secret: invalid format '%s'", format);
		goto out;
	}
	ret = img_secret_from_file(file, format && !strcmp(format, "base64"),
				   &s);
	if (ret < 0)
		goto out;
	ret = img_secret_register(id, s);
	if (ret < 0)
		img_secret_free(s);
out:
	img_kv_free(kv, n);
	return ret;
}

int img_secret_resolve(const struct img_kv *kv, size_t n,
		       const struct img_secret *explicit_secret,
		       const struct img_secret **out)
{
	const char *id = NULL;

	*out = explicit_secret;
	if (explicit_secret)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(kv[i].key, "encrypt.key-secret"))
			id = kv[i].value;
	*out = img_secret_lookup(id);
	if (id && !*out)
		return img_error(-EINVAL, "No secret with id '%s' found", id);
	return 0;
}

const struct img_secret *img_open_secret(struct img *img)
{
	return img->secret;
}

int img_create_secret(const struct img_create_opts *o,
		      const struct img_secret **out)
{
	return img_secret_resolve(o->opts, o->n_opts, o->secret, out);
}
