/* SPDX-License-Identifier: MIT */
/*
 * Option strings as qemu-img's -o takes them ("k1=v1,k2=v2", where ",," is a
 * literal comma inside a value), size strings with binary suffixes
 * ("64k", "1.5G"), and the typed getters drivers use to read their create
 * options.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "img-driver.h"

void img_kv_free(struct img_kv *kv, size_t n)
{
	if (!kv)
		return;
	for (size_t i = 0; i < n; i++) {
		free((char *)kv[i].key);
		free((char *)kv[i].value);
	}
	free(kv);
}

/* Copy the text at *pp up to an unescaped ',' (or stop, for keys), turning
 * ",," into ','. Advances *pp past what was consumed. */
static char *kv_token(const char **pp, char stop)
{
	const char *p = *pp;
	size_t cap = strlen(p) + 1, n = 0;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	while (*p) {
		if (*p == ',') {
			if (p[1] == ',') {
				out[n++] = ',';
				p += 2;
				continue;
			}
			break;
		}
		if (stop && *p == stop)
			break;
		out[n++] = *p++;
	}
	out[n] = '\0';
	*pp = p;
	return out;
}

int img_kv_parse(const char *s, struct img_kv **kv, size_t *n)
{
	struct img_kv *arr = *kv;
	size_t count = *n;
	const char *p = s;
	int ret = 0;

	if (!s)
		return img_error(-EINVAL, "options: no option string");
	while (*p) {
		char *key, *value;
		struct img_kv *grown;

		key = kv_token(&p, '=');
		if (!key) {
			ret = -ENOMEM;
			break;
		}
		if (!key[0]) {
			free(key);
			ret = img_error(-EINVAL,
					"options: empty parameter name in '%s'",
					s);
			break;
		}
		if (*p == '=') {
			p++;
			value = kv_token(&p, '\0');
		} else {
			/* A bare key ("help", "lazy_refcounts") means "on",
			 * as in QEMU's option parser. */
			value = strdup("on");
		}
		if (!value) {
			free(key);
			ret = -ENOMEM;
			break;
		}
		if (*p == ',')
			p++;
		grown = realloc(arr, (count + 1) * sizeof(*arr));
		if (!grown) {
			free(key);
			free(value);
			ret = -ENOMEM;
			break;
		}
		arr = grown;
		arr[count].key = key;
		arr[count].value = value;
		count++;
	}
	*kv = arr;
	*n = count;
	if (ret == -ENOMEM)
		return img_error(ret, "options: out of memory");
	return ret;
}

static int size_suffix_shift(char c)
{
	switch (c) {
	case 'b':
	case 'B':
		return 0;
	case 'k':
	case 'K':
		return 10;
	case 'm':
	case 'M':
		return 20;
	case 'g':
	case 'G':
		return 30;
	case 't':
	case 'T':
		return 40;
	case 'p':
	case 'P':
		return 50;
	case 'e':
	case 'E':
		return 60;
	default:
		return -1;
	}
}

/*
 * Like QEMU's qemu_strtosz: decimal digits with an optional fraction (only
 * meaningful with a suffix: "1.5k" is 1536, "1.5" is refused unless the
 * fraction is zero), or a 0x hex integer; suffixes are powers of 1024.
 * The whole uint64_t range is accepted; callers apply their own limits.
 */
int img_parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	unsigned __int128 val = 0, frac_num = 0, frac_den = 1;
	bool digits = false;
	int shift = 0;

	if (!s || !*s)
		return img_error(-EINVAL, "size: empty size");
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		p += 2;
		while (isxdigit((unsigned char)*p)) {
			int d = isdigit((unsigned char)*p) ?
					*p - '0' :
					tolower((unsigned char)*p) - 'a' + 10;
			val = val * 16 + d;
			if (val > UINT64_MAX)
				goto overflow;
			digits = true;
			p++;
		}
	} else {
		while (isdigit((unsigned char)*p)) {
			val = val * 10 + (*p - '0');
			if (val > UINT64_MAX)
				goto overflow;
			digits = true;
			p++;
		}
		if (*p == '.' && digits) {
			p++;
			while (isdigit((unsigned char)*p)) {
				/* Digits beyond 1e-18 cannot change the
				 * result for sizes up to 2^64. */
				if (frac_den < 1000000000000000000ull) {
					frac_num = frac_num * 10 + (*p - '0');
					frac_den *= 10;
				}
				digits = true;
				p++;
			}
		}
	}
	if (!digits)
		return img_error(-EINVAL, "size: invalid size '%s'", s);
	if (*p) {
		shift = size_suffix_shift(*p);
		if (shift < 0 || p[1])
			return img_error(
				-EINVAL,
				"size: invalid size '%s': use a number with an optional k, M, G, T, P or E suffix",
				s);
	}
	val <<= shift;
	if (val > UINT64_MAX)
		goto overflow;
	if (frac_num) {
		if (!shift)
			return img_error(
				-EINVAL,
				"size: invalid size '%s': a fraction needs a suffix",
				s);
		val += (frac_num << shift) / frac_den;
		if (val > UINT64_MAX)
			goto overflow;
	}
	*out = (uint64_t)val;
	return 0;
overflow:
	return img_error(-EINVAL, "size: size '%s' is too large", s);
}

static const char *opt_find(const struct img_create_opts *opts, const char *key)
{
	const char *found = NULL;

	if (!opts || !opts->opts)
		return NULL;
	for (size_t i = 0; i < opts->n_opts; i++)
		if (opts->opts[i].key && !strcmp(opts->opts[i].key, key))
			found = opts->opts[i].value ? opts->opts[i].value : "";
	return found;
}

int img_opt_str(const struct img_create_opts *opts, const char *key,
		const char **out)
{
	const char *v = opt_find(opts, key);

	if (!v)
		return 0;
	*out = v;
	return 1;
}

int img_opt_size(const struct img_create_opts *opts, const char *key,
		 uint64_t *out)
{
	const char *v = opt_find(opts, key);
	uint64_t size;

	if (!v)
		return 0;
	if (img_parse_size(v, &size) < 0)
		return img_error(
			-EINVAL,
			"options: parameter '%s' expects a size, not '%s'", key,
			v);
	*out = size;
	return 1;
}

int img_opt_u64(const struct img_create_opts *opts, const char *key,
		uint64_t *out)
{
	const char *v = opt_find(opts, key), *p;
	unsigned base = 10;
	uint64_t num = 0;

	if (!v)
		return 0;
	/* Decimal, or hex with 0x; a leading 0 is not octal. */
	p = v;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
	}
	if (!*p)
		goto bad;
	for (; *p; p++) {
		unsigned d;

		if (isdigit((unsigned char)*p))
			d = (unsigned)(*p - '0');
		else if (base == 16 && isxdigit((unsigned char)*p))
			d = (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
		else
			goto bad;
		if (num > (UINT64_MAX - d) / base)
			goto bad;
		num = num * base + d;
	}
	*out = num;
	return 1;
bad:
	return img_error(-EINVAL,
			 "options: parameter '%s' expects a number, not '%s'",
			 key, v);
}

int img_opt_bool(const struct img_create_opts *opts, const char *key, bool *out)
{
	static const char *const yes[] = { "on", "true", "yes" };
	static const char *const no[] = { "off", "false", "no" };
	const char *v = opt_find(opts, key);

	if (!v)
		return 0;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(yes); i++) {
		if (!strcmp(v, yes[i])) {
			*out = true;
			return 1;
		}
		if (!strcmp(v, no[i])) {
			*out = false;
			return 1;
		}
	}
	return img_error(
		-EINVAL,
		"options: parameter '%s' expects 'on' or 'off', not '%s'", key,
		v);
}

int img_opt_prealloc(const struct img_create_opts *opts, enum img_prealloc *out)
{
	static const char *const names[] = {
		[IMG_PREALLOC_OFF] = "off",
		[IMG_PREALLOC_METADATA] = "metadata",
		[IMG_PREALLOC_FALLOC] = "falloc",
		[IMG_PREALLOC_FULL] = "full",
	};
	const char *v = opt_find(opts, "preallocation");

	if (!v)
		return 0;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(names); i++) {
		if (!strcmp(v, names[i])) {
			*out = (enum img_prealloc)i;
			return 1;
		}
	}
	return img_error(
		-EINVAL,
		"options: invalid preallocation mode '%s' (off, metadata, falloc, full)",
		v);
}
