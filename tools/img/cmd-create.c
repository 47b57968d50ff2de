/* SPDX-License-Identifier: MIT */
/*
 * img create: make a new image, with qemu-img create's syntax, checks and
 * messages. Before creating, it prints qemu-img's "Formatting 'f', fmt=..."
 * line, listing the options in the order qemu's option tables give them
 * (including their defaults), so scripts that parse that line keep working.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *kv_get(const struct img_kv *kv, size_t n, const char *key)
{
	const char *v = NULL;
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(kv[i].key, key))
			v = kv[i].value;
	return v;
}

static void print_escaped(const char *s)
{
	for (; *s; s++) {
		if (*s == ',')
			putchar(',');
		putchar(*s);
	}
}

static void print_value(const struct img_opt_desc *d, const char *v)
{
	uint64_t n;

	printf("%s=", d->name);
	if ((d->type == IMG_OPT_SIZE && img_parse_size(v, &n) == 0) ||
	    (d->type == IMG_OPT_NUM && v[0] >= '0' && v[0] <= '9' &&
	     (n = strtoull(v, NULL, 0), 1)))
		printf("%" PRIu64, n);
	else if (d->type == IMG_OPT_STR)
		print_escaped(v);
	else
		fputs(v, stdout);
}

/* qemu's "Formatting 'f', fmt=F k=v ..." line: the format's options in the
 * library's (qemu's) order, given or defaulted. */
static void print_formatting(const char *filename, const char *fmt,
			     const struct img_opt_desc *table, uint64_t size,
			     const struct img_kv *kv, size_t n)
{
	const char *sep = "";
	char size_str[32];

	snprintf(size_str, sizeof(size_str), "%" PRIu64, size);
	printf("Formatting '%s', fmt=%s ", filename, fmt);
	for (; table->name; table++) {
		const char *v = kv_get(kv, n, table->name);

		if (!strcmp(table->name, "size"))
			v = size_str;
		if (!v)
			v = table->def;
		if (!v)
			continue;
		fputs(sep, stdout);
		print_value(table, v);
		sep = " ";
	}
	putchar('\n');
	fflush(stdout);
}

static bool option_known(const struct img_opt_desc *table, const char *key)
{
	for (; table->name; table++)
		if (!strcmp(table->name, key))
			return true;
	return false;
}

static int print_option_help(const char *fmt)
{
	char buf[8192];
	int ret;

	if (!cli_format_known(fmt))
		return cli_fail(1, "Unknown file format '%s'", fmt);
	ret = img_create_help(fmt, buf, sizeof(buf));
	if (ret < 0)
		return cli_fail_img(1, ret, fmt);
	printf("Supported %s options:\n%s", fmt, buf);
	return 0;
}

int cmd_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = "raw", *base = NULL, *base_fmt = NULL;
	const char *filename;
	bool quiet = false, unsafe = false, have_size = false;
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	const struct img_opt_desc *table;
	uint64_t size = 0;
	int c, ret = 1;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'F':
			base_fmt = optarg;
			break;
		case 'b':
			base = optarg;
			break;
		case 'f':
			fmt = optarg;
			break;
		case 'o':
			if (cli_has_help_option(optarg)) {
				img_kv_free(kv, n_kv);
				return print_option_help(fmt);
			}
			if (img_kv_parse(optarg, &kv, &n_kv) < 0) {
				ret = cli_fail(1, "Invalid option list: %s",
					       optarg);
				goto out;
			}
			break;
		case 'q':
			quiet = true;
			break;
		case 'u':
			unsafe = true;
			break;
		default:
			ret = cli_bad_option(argv, c);
			goto out;
		}
	}
	if (optind >= argc) {
		ret = cli_usage_error(1, "Expecting image file name");
		goto out;
	}
	filename = argv[optind++];
	if (optind < argc) {
		if (cli_parse_size_msg(argv[optind], &size, "image size") < 0)
			goto out;
		have_size = true;
		optind++;
	}
	if (optind != argc) {
		ret = cli_usage_error(1, "Unexpected argument: %s",
				      argv[optind]);
		goto out;
	}
	if (!cli_format_known(fmt)) {
		ret = cli_fail(1, "%s: Unknown file format '%s'", filename,
			       fmt);
		goto out;
	}
	if (img_create_options(fmt, &table) < 0) {
		ret = cli_fail_img(1, -EINVAL, fmt);
		goto out;
	}
	for (size_t i = 0; i < n_kv; i++) {
		if (!option_known(table, kv[i].key)) {
			ret = cli_fail(1, "%s: Invalid parameter '%s'",
				       filename, kv[i].key);
			goto out;
		}
	}
	if (!have_size && kv_get(kv, n_kv, "size")) {
		if (cli_parse_size_msg(kv_get(kv, n_kv, "size"), &size,
				       "image size") < 0)
			goto out;
		have_size = true;
	}
	if (!base)
		base = kv_get(kv, n_kv, "backing_file");
	if (!base_fmt)
		base_fmt = kv_get(kv, n_kv, "backing_fmt");
	if (base && !*base) {
		ret = cli_fail(1,
			       "%s: Expected backing file name, got empty "
			       "string",
			       filename);
		goto out;
	}
	if (base && !strcmp(base, filename)) {
		ret = cli_fail(1,
			       "%s: Error: Trying to create an image with the "
			       "same filename as the backing file",
			       filename);
		goto out;
	}
	if (base && !unsafe) {
		char *path = cli_path_combine(filename, base);
		struct img_open_opts bo = {
			.format = base_fmt,
			.flags = IMG_OPEN_RDONLY | IMG_OPEN_SHARED,
		};
		struct img *b;

		img_clear_error();
		ret = path ? img_open(path, &bo, &b) : -ENOMEM;
		if (ret < 0) {
			cli_fail(1, "%s: Could not open '%s': %s", filename,
				 path ? path : base, cli_errmsg(ret));
			fputs("Could not open backing image.\n", stderr);
			free(path);
			ret = 1;
			goto out;
		}
		free(path);
		if (!base_fmt) {
			cli_fail(1,
				 "%s: Backing file specified without backing "
				 "format",
				 filename);
			fprintf(stderr, "Detected format of %s.\n",
				img_format(b));
			img_close(b);
			ret = 1;
			goto out;
		}
		if (!have_size) {
			size = img_size(b);
			have_size = true;
		}
		img_close(b);
	} else if (base && !base_fmt) {
		ret = cli_fail(1,
			       "%s: Backing file specified without backing "
			       "format",
			       filename);
		goto out;
	}
	if (!have_size) {
		ret = cli_fail(1, "%s: Image creation needs a size parameter",
			       filename);
		goto out;
	}

	if (!quiet) {
		struct img_kv *pkv = kv;
		size_t pn = n_kv;
		struct img_kv extra[2];
		struct img_kv *all = NULL;

		/* -b/-F show up as backing_file/backing_fmt options */
		if (base) {
			size_t k = 0;

			extra[k].key = "backing_file";
			extra[k++].value = base;
			if (base_fmt) {
				extra[k].key = "backing_fmt";
				extra[k++].value = base_fmt;
			}
			all = malloc((n_kv + k) * sizeof(*all));
			if (all) {
				if (n_kv)
					memcpy(all, kv, n_kv * sizeof(*kv));
				memcpy(all + n_kv, extra, k * sizeof(*extra));
				pkv = all;
				pn = n_kv + k;
			}
		}
		print_formatting(filename, fmt, table, size, pkv, pn);
		free(all);
	}

	{
		struct img_create_opts co = {
			.format = fmt,
			.size = size,
			.backing_file = base,
			.backing_fmt = base_fmt,
			/* the backing file was opened above when allowed */
			.unsafe_backing = unsafe,
			.opts = kv,
			.n_opts = n_kv,
		};

		img_clear_error();
		ret = img_create(filename, &co);
		if (ret < 0) {
			ret = cli_fail_img(1, ret, filename);
			goto out;
		}
	}
	ret = 0;
out:
	img_kv_free(kv, n_kv);
	return ret;
}
