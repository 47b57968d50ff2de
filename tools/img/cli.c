/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the img subcommands: error printing with qemu-img's
 * message shapes, cache and aio mode parsing, the progress bar, qemu's two
 * human size styles (qemu-img's size_to_str and qemu-io's cvtstr), and a small
 * JSON tree printer that reproduces the key order and indentation of QEMU's
 * QDict pretty printer so that --output=json matches qemu-img byte for byte.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_fail(int exit_code, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("img: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return exit_code;
}

const char *cli_errmsg(int err)
{
	const char *msg = img_last_error();

	if (msg && *msg)
		return msg;
	return strerror(err < 0 ? -err : err);
}

int cli_fail_img(int exit_code, int err, const char *prefix)
{
	if (prefix && *prefix)
		return cli_fail(exit_code, "%s: %s", prefix, cli_errmsg(err));
	return cli_fail(exit_code, "%s", cli_errmsg(err));
}

int cli_usage_error(int exit_code, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("img: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'img --help' for more information\n", stderr);
	return exit_code;
}

int cli_bad_option(char **argv, int opt)
{
	const char *arg = argv[optind - 1];

	if (opt == ':')
		return cli_usage_error(1, "option requires an argument -- '%s'",
				       arg);
	return cli_usage_error(1, "unrecognized option '%s'", arg);
}

int cli_parse_cache(const char *mode, unsigned *flags)
{
	if (!strcmp(mode, "none") || !strcmp(mode, "off")) {
		*flags |= IMG_OPEN_DIRECT;
	} else if (!strcmp(mode, "writeback") ||
		   !strcmp(mode, "writethrough")) {
		/* both go through the page cache; nothing to add */
	} else if (!strcmp(mode, "directsync")) {
		*flags |= IMG_OPEN_DIRECT;
	} else if (!strcmp(mode, "unsafe")) {
		*flags |= IMG_OPEN_UNSAFE;
	} else {
		return img_error(-EINVAL, "Invalid cache option: %s", mode);
	}
	return 0;
}

int cli_parse_aio(const char *mode, enum img_io_kind *kind)
{
	if (!mode || !strcmp(mode, "native")) {
		*kind = IMG_IO_AUTO;
	} else if (!strcmp(mode, "io_uring")) {
		*kind = IMG_IO_URING;
	} else if (!strcmp(mode, "threads") || !strcmp(mode, "psync")) {
		*kind = IMG_IO_PSYNC;
	} else {
		return img_error(-EINVAL, "Invalid aio option: %s", mode);
	}
	return 0;
}

int cli_parse_output(const char *s, int *fmt)
{
	if (!strcmp(s, "human")) {
		*fmt = CLI_OUTPUT_HUMAN;
	} else if (!strcmp(s, "json")) {
		*fmt = CLI_OUTPUT_JSON;
	} else {
		cli_fail(1, "--output must be used with human or json as "
			    "argument.");
		return -EINVAL;
	}
	return 0;
}

int cli_parse_size_msg(const char *s, uint64_t *out, const char *what)
{
	if (img_parse_size(s, out) < 0) {
		cli_fail(1,
			 "Invalid %s specified. You may use k, M, G, T, P or "
			 "E suffixes for",
			 what);
		cli_fail(1, "kilobytes, megabytes, gigabytes, terabytes, "
			    "petabytes and exabytes.");
		return -EINVAL;
	}
	return 0;
}

int cli_open(const char *path, const char *fmt, unsigned flags,
	     enum img_io_kind io, struct img **out)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = flags,
		.io = io,
	};
	int ret;

	img_clear_error();
	cli_secret_open_opts(path, &o);
	ret = img_open(path, &o, out);
	if (ret < 0 && cli_secret_prompt(path, &o, ret))
		ret = img_open(path, &o, out);
	if (ret == -EPERM && (flags & IMG_OPEN_UNTRUSTED))
		cli_fail(1, "%s", cli_errmsg(ret)); /* names path already */
	else if (ret < 0)
		cli_fail(1, "Could not open '%s': %s", path, cli_errmsg(ret));
	return ret;
}

char *cli_path_combine(const char *base, const char *name)
{
	const char *slash;
	size_t dir_len;
	char *res;

	if (name[0] == '/' || !(slash = strrchr(base, '/')))
		return strdup(name);
	dir_len = (size_t)(slash - base) + 1;
	res = malloc(dir_len + strlen(name) + 1);
	if (!res)
		return NULL;
	memcpy(res, base, dir_len);
	strcpy(res + dir_len, name);
	return res;
}

void cli_progress_init(struct cli_progress *p, bool enabled, uint64_t total)
{
	p->enabled = enabled;
	p->total = total;
	p->done = 0;
	p->last_pct = 0;
	p->suffix[0] = '\0';
	if (enabled) {
		printf("    (%3.2f/100%%)\r", 0.0);
		fflush(stdout);
	}
}

void cli_progress_add(struct cli_progress *p, uint64_t bytes)
{
	double pct;

	if (!p->enabled)
		return;
	p->done += bytes;
	if (p->done > p->total)
		p->done = p->total;
	pct = p->total ? (double)p->done * 100.0 / (double)p->total : 100.0;
	if (pct - p->last_pct > 1.0 || (pct == 100.0 && p->last_pct != 100.0)) {
		p->last_pct = pct;
		printf("    (%3.2f/100%%)%s\r", pct, p->suffix);
		fflush(stdout);
	}
}

void cli_progress_end(struct cli_progress *p)
{
	if (p->enabled) {
		printf("\n");
		fflush(stdout);
	}
}

void cli_human_size(uint64_t bytes, char *buf, size_t buf_size)
{
	static const char *const suffixes[] = { "",   "Ki", "Mi", "Gi",
						"Ti", "Pi", "Ei" };
	int exp;
	int i;

	/* qemu's size_to_str: switch unit once the integer part hits 1000 */
	frexp((double)bytes / (1000.0 / 1024.0), &exp);
	i = (exp - 1) / 10;
	if (i < 0)
		i = 0;
	if (i > 6)
		i = 6;
	snprintf(buf, buf_size, "%0.3g %sB",
		 (double)bytes / (double)(1ULL << (i * 10)), suffixes[i]);
}

void cli_cvtstr(double value, char *buf, size_t buf_size)
{
	static const struct {
		double unit;
		const char *suffix;
	} units[] = {
		{ 1152921504606846976.0, " EiB" },
		{ 1125899906842624.0, " PiB" },
		{ 1099511627776.0, " TiB" },
		{ 1073741824.0, " GiB" },
		{ 1048576.0, " MiB" },
		{ 1024.0, " KiB" },
	};
	const char *suffix = " bytes";
	char num[64];
	char *trim;
	size_t i;

	snprintf(num, sizeof(num), "%f", value);
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (value >= units[i].unit) {
			suffix = units[i].suffix;
			snprintf(num, sizeof(num), "%.3f",
				 value / units[i].unit);
			break;
		}
	}
	trim = strstr(num, ".000");
	if (trim)
		*trim = '\0';
	snprintf(buf, buf_size, "%s%s", num, suffix);
}

/* Decode one UTF-8 sequence; returns its length or 0 when invalid. */
static int utf8_decode(const unsigned char *s, unsigned *cp)
{
	unsigned c = s[0];
	int n, i;

	if (c < 0x80) {
		*cp = c;
		return 1;
	} else if ((c & 0xe0) == 0xc0) {
		n = 2;
		c &= 0x1f;
	} else if ((c & 0xf0) == 0xe0) {
		n = 3;
		c &= 0x0f;
	} else if ((c & 0xf8) == 0xf0) {
		n = 4;
		c &= 0x07;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
	    (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

void cli_json_string(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	putchar('"');
	while (*p) {
		unsigned cp;
		int n = utf8_decode(p, &cp);

		if (n == 0) {
			cp = 0xfffd;
			n = 1;
		}
		p += n;
		switch (cp) {
		case '"':
			fputs("\\\"", stdout);
			break;
		case '\\':
			fputs("\\\\", stdout);
			break;
		case '\b':
			fputs("\\b", stdout);
			break;
		case '\f':
			fputs("\\f", stdout);
			break;
		case '\n':
			fputs("\\n", stdout);
			break;
		case '\r':
			fputs("\\r", stdout);
			break;
		case '\t':
			fputs("\\t", stdout);
			break;
		default:
			if (cp >= 0x10000) {
				cp -= 0x10000;
				printf("\\u%04X\\u%04X", 0xd800 + (cp >> 10),
				       0xdc00 + (cp & 0x3ff));
			} else if (cp < 0x20 || cp >= 0x7f) {
				printf("\\u%04X", cp);
			} else {
				putchar((int)cp);
			}
		}
	}
	putchar('"');
}

/* ---- JSON trees printed in QEMU's QDict order ---- */

enum json_type { J_OBJ, J_ARR, J_STR, J_INT, J_BOOL };

struct cli_json {
	enum json_type type;
	char *key; /* member name inside an object, else NULL */
	char *str;
	int64_t num;
	bool b;
	struct cli_json **items;
	size_t n_items;
};

static struct cli_json *json_new(enum json_type type)
{
	struct cli_json *j = calloc(1, sizeof(*j));

	if (!j) {
		fputs("img: out of memory\n", stderr);
		exit(1);
	}
	j->type = type;
	return j;
}

struct cli_json *cli_json_object(void)
{
	return json_new(J_OBJ);
}

struct cli_json *cli_json_array(void)
{
	return json_new(J_ARR);
}

void cli_json_add(struct cli_json *parent, const char *key,
		  struct cli_json *child)
{
	struct cli_json **items;

	items = realloc(parent->items,
			(parent->n_items + 1) * sizeof(*parent->items));
	if (!items || (key && !(child->key = strdup(key)))) {
		fputs("img: out of memory\n", stderr);
		exit(1);
	}
	parent->items = items;
	parent->items[parent->n_items++] = child;
}

void cli_json_add_str(struct cli_json *parent, const char *key, const char *v)
{
	struct cli_json *j = json_new(J_STR);

	j->str = strdup(v ? v : "");
	if (!j->str) {
		fputs("img: out of memory\n", stderr);
		exit(1);
	}
	cli_json_add(parent, key, j);
}

void cli_json_add_int(struct cli_json *parent, const char *key, int64_t v)
{
	struct cli_json *j = json_new(J_INT);

	j->num = v;
	cli_json_add(parent, key, j);
}

void cli_json_add_bool(struct cli_json *parent, const char *key, bool v)
{
	struct cli_json *j = json_new(J_BOOL);

	j->b = v;
	cli_json_add(parent, key, j);
}

void cli_json_free(struct cli_json *j)
{
	size_t i;

	if (!j)
		return;
	for (i = 0; i < j->n_items; i++)
		cli_json_free(j->items[i]);
	free(j->items);
	free(j->key);
	free(j->str);
	free(j);
}

/* QEMU's QDict bucket for a key (tdb_hash modulo 512 buckets). */
static unsigned qdict_bucket(const char *name)
{
	unsigned value = 0x238F13AFu * (unsigned)strlen(name);
	unsigned i;

	for (i = 0; name[i]; i++)
		value = value +
			((unsigned)(unsigned char)name[i] << (i * 5 % 24));
	return (1103515243u * value + 12345u) % 512u;
}

/*
 * A QDict iterates bucket by bucket; inside a bucket the newest entry comes
 * first. Fills order[] with the members of obj in that order.
 */
static void qdict_order(const struct cli_json *obj, size_t *order)
{
	size_t i, j;

	for (i = 0; i < obj->n_items; i++)
		order[i] = obj->n_items - 1 - i;
	for (i = 1; i < obj->n_items; i++) {
		size_t cur = order[i];
		unsigned b = qdict_bucket(obj->items[cur]->key);

		for (j = i;
		     j > 0 && qdict_bucket(obj->items[order[j - 1]]->key) > b;
		     j--)
			order[j] = order[j - 1];
		order[j] = cur;
	}
}

static void json_print(const struct cli_json *j, int level)
{
	size_t i;
	size_t *order;

	switch (j->type) {
	case J_STR:
		cli_json_string(j->str);
		return;
	case J_INT:
		printf("%" PRId64, j->num);
		return;
	case J_BOOL:
		fputs(j->b ? "true" : "false", stdout);
		return;
	case J_ARR:
	case J_OBJ:
		break;
	}
	order = calloc(j->n_items + 1, sizeof(*order));
	if (!order) {
		fputs("img: out of memory\n", stderr);
		exit(1);
	}
	if (j->type == J_OBJ)
		qdict_order(j, order);
	else
		for (i = 0; i < j->n_items; i++)
			order[i] = i;
	putchar(j->type == J_OBJ ? '{' : '[');
	for (i = 0; i < j->n_items; i++) {
		const struct cli_json *c = j->items[order[i]];

		printf("%s\n%*s", i ? "," : "", (level + 1) * 4, "");
		if (j->type == J_OBJ) {
			cli_json_string(c->key);
			fputs(": ", stdout);
		}
		json_print(c, level + 1);
	}
	printf("\n%*s%c", level * 4, "", j->type == J_OBJ ? '}' : ']');
	free(order);
}

void cli_json_print(const struct cli_json *j)
{
	json_print(j, 0);
	putchar('\n');
}

void cli_json_dump_human(const struct cli_json *obj, int level)
{
	size_t *order;
	size_t i;

	if (obj->type != J_OBJ && obj->type != J_ARR)
		return;
	order = calloc(obj->n_items + 1, sizeof(*order));
	if (!order) {
		fputs("img: out of memory\n", stderr);
		exit(1);
	}
	if (obj->type == J_OBJ)
		qdict_order(obj, order);
	else
		for (i = 0; i < obj->n_items; i++)
			order[i] = i;
	for (i = 0; i < obj->n_items; i++) {
		const struct cli_json *c = obj->items[order[i]];
		bool composite = c->type == J_OBJ || c->type == J_ARR;
		const char *k;

		printf("%*s", level * 4, "");
		if (obj->type == J_OBJ) {
			for (k = c->key; *k; k++)
				putchar(*k == '-' ? ' ' : *k);
		} else {
			printf("[%zu]", i);
		}
		fputs(composite ? ":\n" : ": ", stdout);
		switch (c->type) {
		case J_STR:
			printf("%s\n", c->str);
			break;
		case J_INT:
			printf("%" PRId64 "\n", c->num);
			break;
		case J_BOOL:
			printf("%s\n", c->b ? "true" : "false");
			break;
		case J_OBJ:
		case J_ARR:
			cli_json_dump_human(c, level + 1);
			break;
		}
	}
	free(order);
}

bool cli_format_known(const char *fmt)
{
	const char *const *f;

	for (f = img_formats(); f && *f; f++)
		if (!strcmp(*f, fmt))
			return true;
	return false;
}

bool cli_option_listed(const char *help, const char *key)
{
	const char *p = help;
	size_t len = strlen(key);

	while (p && *p) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, key, len) && p[len] == '=')
			return true;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return false;
}

bool cli_has_help_option(const char *s)
{
	char *copy = strdup(s), *tok, *save = NULL;
	bool found = false;

	if (!copy)
		return false;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save))
		if (!strcmp(tok, "help") || !strcmp(tok, "?"))
			found = true;
	free(copy);
	return found;
}

void cli_progress_cb(void *opaque, uint64_t done, uint64_t total)
{
	struct cli_progress *p = opaque;

	p->total = total;
	if (done > p->done)
		cli_progress_add(p, done - p->done);
}
