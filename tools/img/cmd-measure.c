/* SPDX-License-Identifier: MIT */
/*
 * img measure: how much host space a new image of the given format and
 * options would need, either empty (--size) or holding an existing image's
 * contents, printed as qemu-img measure prints it (text or JSON, including
 * qemu 7.2's "bitmaps" member for qcow2 to qcow2).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_measure(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_SIZE };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *out_fmt = "raw", *filename = NULL;
	int output = CLI_OUTPUT_HUMAN;
	unsigned flags = IMG_OPEN_RDONLY;
	bool have_size = false, help = false;
	uint64_t size = 0;
	struct img_kv *kv = NULL;
	size_t n_kv = 0;
	struct img *src = NULL;
	struct img_measure m;
	char help_text[8192];
	int c, ret = 1;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:O:o:l:U", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'o':
			if (cli_has_help_option(optarg)) {
				help = true;
				break;
			}
			if (img_kv_parse(optarg, &kv, &n_kv) < 0) {
				cli_fail(1, "Invalid option list: %s", optarg);
				goto out;
			}
			break;
		case 'l':
			cli_fail(1, "snapshots are not supported");
			goto out;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &output) < 0)
				goto out;
			break;
		case OPT_SIZE:
			if (cli_parse_size_msg(optarg, &size, "image size") < 0)
				goto out;
			have_size = true;
			break;
		default:
			ret = cli_bad_option(argv, c);
			goto out;
		}
	}
	if (help) {
		if (!cli_format_known(out_fmt)) {
			cli_fail(1, "Unknown file format '%s'", out_fmt);
			goto out;
		}
		if (img_create_help(out_fmt, help_text, sizeof(help_text)) <
		    0) {
			cli_fail_img(1, -EINVAL, out_fmt);
			goto out;
		}
		printf("Supported %s options:\n%s", out_fmt, help_text);
		ret = 0;
		goto out;
	}
	if (optind < argc)
		filename = argv[optind++];
	if (optind < argc) {
		cli_usage_error(1, "At most one filename argument is allowed.");
		goto out;
	}
	if (filename && have_size) {
		cli_fail(1,
			 "--size N cannot be used together with a filename.");
		goto out;
	}
	if (!filename && !have_size) {
		cli_fail(1, "Either --size N or one filename must be "
			    "specified.");
		goto out;
	}
	if (!cli_format_known(out_fmt)) {
		cli_fail(1, "Unknown file format '%s'", out_fmt);
		goto out;
	}
	if (img_create_help(out_fmt, help_text, sizeof(help_text)) == 0) {
		size_t i;

		for (i = 0; i < n_kv; i++) {
			if (!cli_option_listed(help_text, kv[i].key)) {
				cli_fail(1, "Invalid parameter '%s'",
					 kv[i].key);
				cli_fail(1,
					 "Invalid options for file format '%s'",
					 out_fmt);
				goto out;
			}
		}
	}
	if (filename && cli_open(filename, fmt, flags, IMG_IO_AUTO, &src) < 0)
		goto out;

	{
		struct img_create_opts co = {
			.format = out_fmt,
			.size = have_size ? size : 0,
			.opts = kv,
			.n_opts = n_kv,
		};

		img_clear_error();
		ret = img_measure(&co, src, &m);
		if (ret < 0) {
			ret = cli_fail_img(1, ret, NULL);
			goto out;
		}
	}
	if (output == CLI_OUTPUT_JSON) {
		struct cli_json *o = cli_json_object();

		cli_json_add_int(o, "required", (int64_t)m.required);
		cli_json_add_int(o, "fully-allocated",
				 (int64_t)m.fully_allocated);
		if (m.has_bitmaps)
			cli_json_add_int(o, "bitmaps", (int64_t)m.bitmaps);
		cli_json_print(o);
		cli_json_free(o);
	} else {
		printf("required size: %" PRIu64 "\n", m.required);
		printf("fully allocated size: %" PRIu64 "\n",
		       m.fully_allocated);
		if (m.has_bitmaps)
			printf("bitmaps size: %" PRIu64 "\n", m.bitmaps);
	}
	ret = 0;
out:
	img_close(src);
	img_kv_free(kv, n_kv);
	return ret;
}
