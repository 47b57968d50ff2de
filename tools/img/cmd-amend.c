/* SPDX-License-Identifier: MIT */
/*
 * img amend: change the format options of an existing image (-o, as
 * qemu-img amend: compat, lazy_refcounts, refcount_bits, data_file,
 * data_file_raw, size; beyond qemu-img 7.2, backing_file and backing_fmt).
 * "-o help" lists the options. Exit codes are qemu-img's (0 done, 1 error).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int print_help(const char *fmt)
{
	char buf[8192];

	img_clear_error();
	if (img_amend_help(fmt, buf, sizeof(buf)) < 0)
		return cli_fail_img(1, -EINVAL, NULL);
	printf("Amend options for '%s':\n%s", fmt, buf);
	return 0;
}

int cmd_amend(int argc, char **argv)
{
	enum { OPT_FORCE = 256 };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force", no_argument, NULL, OPT_FORCE },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *cache = "writeback", *filename;
	char *options = NULL;
	bool quiet = false, progress = false;
	struct cli_progress bar;
	struct img_progress prog = { cli_progress_cb, &bar };
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	unsigned flags = 0;
	struct img *img = NULL;
	int c, ret = 1;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":ho:f:t:pq", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'o':
			/* Several -o accumulate, as qemu-img does. */
			if (options) {
				char *joined = malloc(strlen(options) +
						      strlen(optarg) + 2);

				if (!joined) {
					free(options);
					return cli_fail(1, "out of memory");
				}
				sprintf(joined, "%s,%s", options, optarg);
				free(options);
				options = joined;
			} else {
				options = strdup(optarg);
				if (!options)
					return cli_fail(1, "out of memory");
			}
			break;
		case 'f':
			fmt = optarg;
			break;
		case 't':
			cache = optarg;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_FORCE:
			break;
		default:
			free(options);
			return cli_bad_option(argv, c);
		}
	}
	if (!options)
		return cli_usage_error(1, "Must specify options (-o)");
	if (quiet)
		progress = false;
	filename = optind == argc - 1 ? argv[optind] : NULL;
	if (fmt && cli_has_help_option(options)) {
		ret = print_help(fmt);
		goto out;
	}
	if (!filename) {
		cli_fail(1, "Expecting one image file name");
		goto out;
	}
	if (cli_parse_cache(cache, &flags) < 0) {
		cli_fail(1, "Invalid cache option: %s", cache);
		goto out;
	}
	/* Nothing amend does reads the backing chain. */
	if (cli_open(filename, fmt, flags | IMG_OPEN_NO_BACKING, IMG_IO_AUTO,
		     &img) < 0)
		goto out;
	if (cli_has_help_option(options)) {
		ret = print_help(img_format(img));
		goto out;
	}
	if (img_kv_parse(options, &kv, &n_kv) < 0) {
		cli_fail_img(1, -EINVAL, NULL);
		goto out;
	}
	cli_progress_init(&bar, progress, 1);
	img_clear_error();
	ret = img_amend(img, kv, n_kv, &prog);
	cli_progress_end(&bar);
	if (ret < 0) {
		cli_fail_img(1, ret, NULL);
		ret = 1;
		goto out;
	}
	ret = img_close(img);
	img = NULL;
	if (ret < 0) {
		cli_fail_img(1, ret, filename);
		ret = 1;
	}
out:
	img_close(img);
	img_kv_free(kv, n_kv);
	free(options);
	return ret;
}
