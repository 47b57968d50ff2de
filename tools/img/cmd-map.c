/* SPDX-License-Identifier: MIT */
/*
 * img map: print where an image's guest ranges live, through its backing
 * chain, as qemu-img map does: JSON lines of extents with depth, present,
 * zero, data and host offset, or the human table of data ranges. Adjacent
 * extents with equal status and contiguous host offsets are merged, exactly
 * as qemu's entry_mergeable() does, so the output matches line for line.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define MAP_PROBE_MAX (1ull << 30)

struct map_entry {
	uint64_t start;
	uint64_t length;
	bool data, zero, present, has_offset;
	uint64_t offset;
	unsigned depth;
	const char *filename; /* only with has_offset */
};

static bool mergeable(const struct map_entry *curr,
		      const struct map_entry *next)
{
	if (curr->length == 0)
		return false;
	if (curr->zero != next->zero || curr->data != next->data ||
	    curr->depth != next->depth || curr->present != next->present)
		return false;
	if (!curr->filename != !next->filename)
		return false;
	if (curr->filename && strcmp(curr->filename, next->filename))
		return false;
	if (curr->has_offset != next->has_offset)
		return false;
	if (curr->has_offset && curr->offset + curr->length != next->offset)
		return false;
	return true;
}

static int dump_entry(int output, const struct map_entry *e,
		      struct map_entry *next)
{
	if (output == CLI_OUTPUT_HUMAN) {
		if (e->data && !e->has_offset)
			return cli_fail(1, "File contains external, encrypted "
					   "or compressed clusters.");
		if (e->data && !e->zero) {
			char a[32], b[32], c[32];

			/* qemu prints these with %#-16 PRIx64: 0 has no 0x */
			snprintf(a, sizeof(a), "%#" PRIx64, e->start);
			snprintf(b, sizeof(b), "%#" PRIx64, e->length);
			snprintf(c, sizeof(c), "%#" PRIx64,
				 e->has_offset ? e->offset : 0);
			printf("%-16s%-16s%-16s%s\n", a, b, c,
			       e->filename ? e->filename : "");
		}
		/* the table ignores the difference between zero and hole */
		if (next && (!next->data || next->zero) &&
		    (!e->data || e->zero)) {
			next->data = false;
			next->zero = true;
		}
		return 0;
	}
	printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
	       ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
	       e->start, e->length, e->depth, e->present ? "true" : "false",
	       e->zero ? "true" : "false", e->data ? "true" : "false");
	if (e->has_offset)
		printf(", \"offset\": %" PRIu64, e->offset);
	putchar('}');
	if (next)
		puts(",");
	return 0;
}

int cmd_map(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_START, OPT_MAX_LEN };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "start-offset", required_argument, NULL, OPT_START },
		{ "max-length", required_argument, NULL, OPT_MAX_LEN },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *filename;
	int output = CLI_OUTPUT_HUMAN;
	unsigned flags = IMG_OPEN_RDONLY | cli_untrusted();
	uint64_t start = 0, max_len = UINT64_MAX, length;
	unsigned layers = 0;
	struct map_entry curr, next;
	struct img *img, *l;
	int c, ret = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &output) < 0)
				return 1;
			break;
		case OPT_START:
			if (cli_parse_size_msg(optarg, &start, "start offset") <
			    0)
				return 1;
			break;
		case OPT_MAX_LEN:
			if (cli_parse_size_msg(optarg, &max_len, "max length") <
			    0)
				return 1;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting one image file name");
	filename = argv[optind];

	if (cli_open(filename, fmt, flags, IMG_IO_AUTO, &img) < 0)
		return 1;
	for (l = img; l; l = img_backing(l))
		layers++;
	length = img_size(img);
	if (max_len != UINT64_MAX && start + max_len >= start &&
	    start + max_len < length)
		length = start + max_len;

	if (output == CLI_OUTPUT_HUMAN)
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
		       "File");
	else
		putchar('[');

	memset(&curr, 0, sizeof(curr));
	curr.start = start;
	while (curr.start + curr.length < length) {
		uint64_t off = curr.start + curr.length;
		uint64_t n = length - off;
		struct img_extent ext;
		int r;

		if (n > MAP_PROBE_MAX)
			n = MAP_PROBE_MAX;
		img_clear_error();
		r = img_block_status(img, off, n, 0, &ext);
		if (r < 0) {
			ret = cli_fail(1, "Could not read file metadata: %s",
				       cli_errmsg(r));
			goto out;
		}
		if (ext.len == 0 || ext.len > n)
			ext.len = n;
		memset(&next, 0, sizeof(next));
		next.start = off;
		next.length = ext.len;
		next.data = ext.flags & IMG_EXT_DATA;
		next.zero = ext.flags & IMG_EXT_ZERO;
		next.present = ext.flags & IMG_EXT_ALLOCATED;
		next.has_offset = ext.flags & IMG_EXT_OFFSET_VALID;
		next.offset = next.has_offset ? ext.file_off : 0;
		next.depth = ext.depth;
		/* qemu reports ranges no layer holds at the bottom layer */
		if (layers && next.depth >= layers)
			next.depth = layers - 1;
		next.filename =
			next.has_offset ?
				(ext.file ? ext.file : img_filename(img)) :
				NULL;
		if (mergeable(&curr, &next)) {
			curr.length += next.length;
			continue;
		}
		if (curr.length > 0 && dump_entry(output, &curr, &next) < 0) {
			ret = 1;
			goto out;
		}
		curr = next;
	}
	if (dump_entry(output, &curr, NULL) < 0) {
		ret = 1;
		goto out;
	}
	if (output == CLI_OUTPUT_JSON)
		puts("]");
out:
	img_close(img);
	return ret;
}
