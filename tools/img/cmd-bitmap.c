/* SPDX-License-Identifier: MIT */
/*
 * img bitmap: change an image's persistent dirty bitmaps with qemu-img
 * bitmap's syntax: one or more of --add, --remove, --clear, --enable,
 * --disable and --merge SOURCE, run in command-line order on one bitmap,
 * with -g for --add and -b/-F naming another image that holds the --merge
 * source. Also the "bitmaps" list that img info shows under format-specific.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

enum action {
	ACT_ADD,
	ACT_REMOVE,
	ACT_CLEAR,
	ACT_ENABLE,
	ACT_DISABLE,
	ACT_MERGE
};

static const char *const action_names[] = {
	[ACT_ADD] = "add",	   [ACT_REMOVE] = "remove",
	[ACT_CLEAR] = "clear",	   [ACT_ENABLE] = "enable",
	[ACT_DISABLE] = "disable", [ACT_MERGE] = "merge",
};

struct step {
	enum action act;
	const char *src; /* ACT_MERGE */
};

static int run_step(struct img *img, const char *name, const struct step *st,
		    uint64_t granularity, struct img *src)
{
	switch (st->act) {
	case ACT_ADD:
		return img_bitmap_add(img, name, granularity, false);
	case ACT_REMOVE:
		return img_bitmap_remove(img, name);
	case ACT_CLEAR:
		return img_bitmap_clear(img, name);
	case ACT_ENABLE:
		return img_bitmap_enable(img, name, true);
	case ACT_DISABLE:
		return img_bitmap_enable(img, name, false);
	case ACT_MERGE:
		return img_bitmap_merge(img, name, src ? src : img, st->src);
	}
	return -EINVAL;
}

int cmd_bitmap(int argc, char **argv)
{
	enum {
		OPT_ADD = 256,
		OPT_REMOVE,
		OPT_CLEAR,
		OPT_ENABLE,
		OPT_DISABLE,
		OPT_MERGE
	};
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "add", no_argument, NULL, OPT_ADD },
		{ "remove", no_argument, NULL, OPT_REMOVE },
		{ "clear", no_argument, NULL, OPT_CLEAR },
		{ "enable", no_argument, NULL, OPT_ENABLE },
		{ "disable", no_argument, NULL, OPT_DISABLE },
		{ "merge", required_argument, NULL, OPT_MERGE },
		{ "granularity", required_argument, NULL, 'g' },
		{ "source-file", required_argument, NULL, 'b' },
		{ "source-format", required_argument, NULL, 'F' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *src_file = NULL, *src_fmt = NULL, *name;
	struct img *img = NULL, *src = NULL;
	struct step *steps;
	size_t n = 0;
	uint64_t granularity = 0;
	bool add = false, merge = false;
	int c, ret = 1;

	steps = calloc((size_t)argc + 1, sizeof(*steps));
	if (!steps)
		return cli_fail(1, "out of memory");
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":b:f:F:g:h", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'b':
			src_file = optarg;
			break;
		case 'F':
			src_fmt = optarg;
			break;
		case 'g':
			if (cli_parse_size_msg(optarg, &granularity,
					       "granularity") < 0)
				goto out;
			break;
		case OPT_ADD:
		case OPT_REMOVE:
		case OPT_CLEAR:
		case OPT_ENABLE:
		case OPT_DISABLE:
		case OPT_MERGE:
			steps[n].act = (enum action)(c - OPT_ADD);
			steps[n].src = optarg;
			add |= c == OPT_ADD;
			merge |= c == OPT_MERGE;
			n++;
			break;
		default:
			ret = cli_bad_option(argv, c);
			goto out;
		}
	}
	if (!n) {
		cli_fail(1, "Need at least one of --add, --remove, --clear, "
			    "--enable, --disable, or --merge");
		goto out;
	}
	if (granularity && !add) {
		cli_fail(1, "granularity only supported with --add");
		goto out;
	}
	if (src_fmt && !src_file) {
		cli_fail(1, "-F only supported with -b");
		goto out;
	}
	if (src_file && !merge) {
		cli_fail(1, "Merge bitmap source file only supported with "
			    "--merge");
		goto out;
	}
	if (optind != argc - 2) {
		cli_fail(1, "Expecting filename and bitmap name");
		goto out;
	}
	name = argv[optind + 1];
	if (cli_open(argv[optind], fmt, IMG_OPEN_NO_BACKING, IMG_IO_AUTO,
		     &img) < 0)
		goto out;
	if (src_file &&
	    cli_open(src_file, src_fmt, IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING,
		     IMG_IO_AUTO, &src) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		int err;

		img_clear_error();
		err = run_step(img, name, &steps[i], granularity, src);
		if (err < 0) {
			cli_fail(1, "Operation %s on bitmap %s failed: %s",
				 action_names[steps[i].act], name,
				 cli_errmsg(err));
			if (err == -EINVAL &&
			    strstr(cli_errmsg(err), "inconsistent"))
				fprintf(stderr,
					"Try 'img bitmap --remove' to delete "
					"this bitmap from disk\n");
			goto out;
		}
	}
	ret = 0;
out:
	img_close(src);
	if (img) {
		int err = img_close(img);

		if (err < 0 && ret == 0)
			ret = cli_fail_img(1, err, argv[optind]);
	}
	free(steps);
	return ret;
}

void cli_bitmap_info(struct img *img, struct cli_json *data)
{
	struct img_bitmap_info *l = NULL;
	struct cli_json *arr;
	size_t n = 0;

	if (img_bitmap_list(img, &l, &n) < 0 || n == 0) {
		img_bitmap_list_free(l, n);
		return;
	}
	arr = cli_json_array();
	for (size_t i = 0; i < n; i++) {
		struct cli_json *o = cli_json_object();
		struct cli_json *flags = cli_json_array();

		if (l[i].flags & IMG_BITMAP_IN_USE)
			cli_json_add_str(flags, NULL, "in-use");
		if (l[i].flags & IMG_BITMAP_AUTO)
			cli_json_add_str(flags, NULL, "auto");
		cli_json_add(o, "flags", flags);
		cli_json_add_str(o, "name", l[i].name);
		cli_json_add_int(o, "granularity", (int64_t)l[i].granularity);
		cli_json_add(arr, NULL, o);
	}
	cli_json_add(data, "bitmaps", arr);
	img_bitmap_list_free(l, n);
}

int cli_convert_bitmaps_check(struct img *src, unsigned n_srcs, struct img *dst,
			      bool skip_broken)
{
	struct img_bitmap_info *l = NULL, *dl = NULL;
	size_t n = 0, dn = 0;
	int ret = -1;

	if (n_srcs > 1) {
		cli_fail(1, "Copying bitmaps only possible with single source");
		return -1;
	}
	if (img_bitmap_list(src, &l, &n) < 0) {
		cli_fail(1, "Source lacks bitmap support");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (skip_broken || !(l[i].flags & IMG_BITMAP_IN_USE))
			continue;
		cli_fail(1, "Cannot copy inconsistent bitmap '%s'", l[i].name);
		fprintf(stderr, "Try --skip-broken-bitmaps, or use 'img bitmap "
				"--remove' to delete it\n");
		goto out;
	}
	if (img_bitmap_list(dst, &dl, &dn) < 0) {
		cli_fail(1, "Format driver '%s' does not support bitmaps",
			 img_format(dst));
		goto out;
	}
	ret = 0;
out:
	img_bitmap_list_free(l, n);
	img_bitmap_list_free(dl, dn);
	return ret;
}

int cli_convert_bitmaps_copy(struct img *src, struct img *dst, bool skip_broken)
{
	struct img_bitmap_info *l = NULL;
	size_t n = 0;
	int ret;

	ret = img_bitmap_list(src, &l, &n);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		const char *name = l[i].name;

		if (l[i].flags & IMG_BITMAP_IN_USE) {
			if (skip_broken) {
				fprintf(stderr,
					"img: warning: Skipping inconsistent "
					"bitmap '%s'\n",
					name);
				continue;
			}
			ret = img_error(-EINVAL, "bitmap '%s' is inconsistent",
					name);
			break;
		}
		ret = img_bitmap_add(dst, name, l[i].granularity,
				     !(l[i].flags & IMG_BITMAP_AUTO));
		if (ret == 0)
			ret = img_bitmap_merge(dst, name, src, name);
		if (ret < 0) {
			cli_fail(1, "Failed to populate bitmap %s: %s", name,
				 cli_errmsg(ret));
			img_bitmap_list_free(l, n);
			return -1;
		}
	}
	img_bitmap_list_free(l, n);
	if (ret < 0) {
		cli_fail_img(1, ret, "Failed to copy bitmaps");
		return -1;
	}
	return 0;
}
