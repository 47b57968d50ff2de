/* SPDX-License-Identifier: MIT */
/*
 * img check: run the format's consistency check (and with -r, its repair)
 * and report as qemu-img check does, in text or JSON, with its exit codes:
 * 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 no check support.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void report_line(void *opaque, const char *line)
{
	(void)opaque;
	fflush(stdout);
	fprintf(stderr, "%s\n", line);
}

static void print_human(const struct img_check *r)
{
	if (!(r->corruptions || r->leaks || r->check_errors)) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%" PRIu64 " errors were found on the image.\n"
			       "Data may be corrupted, or further writes to "
			       "the image may corrupt it.\n",
			       r->corruptions);
		if (r->leaks)
			printf("\n%" PRIu64
			       " leaked clusters were found on the "
			       "image.\n"
			       "This means waste of disk space, but no harm to "
			       "data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%" PRIu64 " internal errors have occurred "
			       "during the check.\n",
			       r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% "
		       "fragmented, %0.2f%% compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       (double)r->allocated_clusters * 100.0 /
			       (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 /
			       (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 /
			       (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

static void print_json(const struct img_check *r, const char *filename,
		       const char *format)
{
	struct cli_json *o = cli_json_object();

	/* QAPI ImageCheck order; optional members only when non-zero */
	cli_json_add_str(o, "filename", filename);
	cli_json_add_str(o, "format", format);
	cli_json_add_int(o, "check-errors", (int64_t)r->check_errors);
	if (r->image_end_offset)
		cli_json_add_int(o, "image-end-offset",
				 (int64_t)r->image_end_offset);
	if (r->corruptions)
		cli_json_add_int(o, "corruptions", (int64_t)r->corruptions);
	if (r->leaks)
		cli_json_add_int(o, "leaks", (int64_t)r->leaks);
	if (r->corruptions_fixed)
		cli_json_add_int(o, "corruptions-fixed",
				 (int64_t)r->corruptions_fixed);
	if (r->leaks_fixed)
		cli_json_add_int(o, "leaks-fixed", (int64_t)r->leaks_fixed);
	if (r->total_clusters)
		cli_json_add_int(o, "total-clusters",
				 (int64_t)r->total_clusters);
	if (r->allocated_clusters)
		cli_json_add_int(o, "allocated-clusters",
				 (int64_t)r->allocated_clusters);
	if (r->fragmented_clusters)
		cli_json_add_int(o, "fragmented-clusters",
				 (int64_t)r->fragmented_clusters);
	if (r->compressed_clusters)
		cli_json_add_int(o, "compressed-clusters",
				 (int64_t)r->compressed_clusters);
	cli_json_print(o);
	cli_json_free(o);
}

static int run_check(struct img *img, unsigned fix, struct img_check *r)
{
	memset(r, 0, sizeof(*r));
	r->report = report_line;
	img_clear_error();
	return img_check(img, fix, r);
}

int cmd_check(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256 };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "repair", required_argument, NULL, 'r' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *filename;
	int output = CLI_OUTPUT_HUMAN;
	unsigned flags = cli_untrusted() | IMG_OPEN_RDONLY |
			 IMG_OPEN_NO_BACKING | IMG_OPEN_NO_REPAIR;
	unsigned fix = 0;
	bool quiet = false;
	struct img_check r;
	struct img *img;
	int c, ret;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:r:T:qU", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'r':
			flags &= ~IMG_OPEN_RDONLY;
			if (!strcmp(optarg, "leaks"))
				fix = IMG_CHECK_FIX_LEAKS;
			else if (!strcmp(optarg, "all"))
				fix = IMG_CHECK_FIX_LEAKS |
				      IMG_CHECK_FIX_ERRORS;
			else
				return cli_usage_error(
					1,
					"Unknown option value for -r "
					"(expecting 'leaks' or 'all'): %s",
					optarg);
			break;
		case 'T':
			img_clear_error();
			if (cli_parse_cache(optarg, &flags) < 0)
				return cli_fail(1,
						"Invalid source cache option: "
						"%s",
						optarg);
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &output) < 0)
				return 1;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting one image file name");
	filename = argv[optind];
	if (fix && (flags & IMG_OPEN_SHARED))
		return cli_usage_error(1, "--force-share/-U is not allowed "
					  "with -r");

	if (cli_open(filename, fmt, flags, IMG_IO_AUTO, &img) < 0)
		return 1;
	ret = run_check(img, fix, &r);
	if (ret == -ENOTSUP) {
		img_close(img);
		return cli_fail(63,
				"This image format does not support checks");
	}
	if (ret == 0 && (r.corruptions_fixed || r.leaks_fixed)) {
		uint64_t corruptions_fixed = r.corruptions_fixed;
		uint64_t leaks_fixed = r.leaks_fixed;

		if (output == CLI_OUTPUT_HUMAN && !quiet)
			printf("The following inconsistencies were found and "
			       "repaired:\n\n"
			       "    %" PRIu64 " leaked clusters\n"
			       "    %" PRIu64 " corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       leaks_fixed, corruptions_fixed);
		ret = run_check(img, 0, &r);
		r.corruptions_fixed = corruptions_fixed;
		r.leaks_fixed = leaks_fixed;
	}
	if (ret == 0 && !quiet) {
		if (output == CLI_OUTPUT_JSON)
			print_json(&r, filename, img_format(img));
		else
			print_human(&r);
	}
	if (ret < 0 || r.check_errors) {
		if (ret < 0)
			cli_fail(1, "Check failed: %s", cli_errmsg(ret));
		else
			cli_fail(1, "Check failed");
		img_close(img);
		return 1;
	}
	ret = img_close(img);
	if (ret < 0 && fix)
		return cli_fail_img(1, ret, filename);
	if (r.corruptions)
		return 2;
	if (r.leaks)
		return 3;
	return 0;
}
