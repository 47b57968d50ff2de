/* SPDX-License-Identifier: MIT */
/*
 * img info: describe an image (and with --backing-chain every layer below
 * it) in qemu-img info's human text or JSON, with the same field names, key
 * order and layout, built from img_info().
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

/* The "encrypt" object (QCryptoBlockInfo), members in QAPI order. */
static void crypt_object(struct img *img, struct cli_json *data)
{
	struct img_crypt_info ci;
	struct cli_json *o, *slots;

	if (img_crypt_info(img, &ci) < 0)
		return;
	o = cli_json_object();
	cli_json_add_str(o, "format", ci.format);
	if (!strcmp(ci.format, "luks")) {
		cli_json_add_str(o, "cipher-alg", ci.cipher_alg);
		cli_json_add_str(o, "cipher-mode", ci.cipher_mode);
		cli_json_add_str(o, "ivgen-alg", ci.ivgen_alg);
		if (ci.ivgen_hash_alg)
			cli_json_add_str(o, "ivgen-hash-alg",
					 ci.ivgen_hash_alg);
		cli_json_add_str(o, "hash-alg", ci.hash_alg);
		cli_json_add_int(o, "payload-offset",
				 (int64_t)ci.payload_offset);
		cli_json_add_int(o, "master-key-iters", ci.master_key_iters);
		cli_json_add_str(o, "uuid", ci.uuid);
		slots = cli_json_array();
		for (unsigned i = 0; i < ci.n_slots; i++) {
			struct cli_json *sl = cli_json_object();

			cli_json_add_bool(sl, "active", ci.slots[i].active);
			if (ci.slots[i].active) {
				cli_json_add_int(sl, "iters",
						 ci.slots[i].iters);
				cli_json_add_int(sl, "stripes",
						 ci.slots[i].stripes);
			}
			cli_json_add_int(sl, "key-offset",
					 (int64_t)ci.slots[i].key_offset);
			cli_json_add(slots, NULL, sl);
		}
		cli_json_add(o, "slots", slots);
	}
	cli_json_add(data, "encrypt", o);
}

/* The "data" object of "format-specific". */
static struct cli_json *fields_object(struct img *img,
				      const struct img_info *in)
{
	struct cli_json *data = cli_json_object();
	size_t i;

	for (i = 0; i < in->n_fields && i < IMG_INFO_MAX_FIELDS; i++) {
		const struct img_field *f = &in->fields[i];

		switch (f->type) {
		case IMG_VAL_STR:
			cli_json_add_str(data, f->key, f->str);
			break;
		case IMG_VAL_U64:
			cli_json_add_int(data, f->key, (int64_t)f->u64);
			break;
		case IMG_VAL_BOOL:
			cli_json_add_bool(data, f->key, f->b);
			break;
		}
	}
	crypt_object(img, data);
	cli_bitmap_info(img, data);
	return data;
}

/* The image's description as qemu-img's ImageInfo object. */
static struct cli_json *info_object(struct img *img, const struct img_info *in,
				    const char *filename)
{
	struct cli_json *o = cli_json_object();

	/* added in QAPI order, which decides ties inside a QDict bucket */
	cli_json_add_str(o, "filename", filename);
	cli_json_add_str(o, "format", in->format);
	cli_json_add_bool(o, "dirty-flag", in->dirty);
	cli_json_add_int(o, "actual-size", (int64_t)in->actual_size);
	cli_json_add_int(o, "virtual-size", (int64_t)in->virtual_size);
	if (in->cluster_size)
		cli_json_add_int(o, "cluster-size", (int64_t)in->cluster_size);
	if (in->encrypted)
		cli_json_add_bool(o, "encrypted", true);
	if (in->backing_file) {
		char *full = cli_path_combine(filename, in->backing_file);

		cli_json_add_str(o, "backing-filename", in->backing_file);
		if (full)
			cli_json_add_str(o, "full-backing-filename", full);
		free(full);
		if (in->backing_fmt)
			cli_json_add_str(o, "backing-filename-format",
					 in->backing_fmt);
	}
	cli_snapshot_info_json(img, o);
	if (in->n_fields) {
		struct cli_json *spec = cli_json_object();
		struct cli_json *data = fields_object(img, in);

		cli_json_add_str(spec, "type", in->format);
		cli_json_add(spec, "data", data);
		cli_json_add(o, "format-specific", spec);
	}
	return o;
}

static void print_human(struct img *img, const struct img_info *in,
			const char *filename)
{
	char vsize[32], dsize[32];

	cli_human_size(in->virtual_size, vsize, sizeof(vsize));
	cli_human_size(in->actual_size, dsize, sizeof(dsize));
	printf("image: %s\n"
	       "file format: %s\n"
	       "virtual size: %s (%" PRIu64 " bytes)\n"
	       "disk size: %s\n",
	       filename, in->format, vsize, in->virtual_size, dsize);
	if (in->encrypted)
		printf("encrypted: yes\n");
	if (in->cluster_size)
		printf("cluster_size: %" PRIu64 "\n", in->cluster_size);
	if (in->dirty)
		printf("cleanly shut down: no\n");
	if (in->backing_file) {
		char *full = cli_path_combine(filename, in->backing_file);

		printf("backing file: %s", in->backing_file);
		if (!full)
			printf(" (cannot determine actual path)");
		else if (strcmp(full, in->backing_file))
			printf(" (actual path: %s)", full);
		printf("\n");
		free(full);
		if (in->backing_fmt)
			printf("backing file format: %s\n", in->backing_fmt);
	}
	cli_snapshot_info_human(img);
	if (in->n_fields) {
		struct cli_json *data = fields_object(img, in);

		printf("Format specific information:\n");
		cli_json_dump_human(data, 1);
		cli_json_free(data);
	}
}

/*
 * --untrusted --output=json on a refused image: what is known without
 * following the reference the image makes, and why it was refused.
 */
static int print_refusal(const char *filename, const char *fmt, int err)
{
	struct cli_json *o = cli_json_object();
	struct stat st;

	cli_json_add_str(o, "filename", filename);
	if (fmt)
		cli_json_add_str(o, "format", fmt);
	if (!stat(filename, &st))
		cli_json_add_int(o, "actual-size", (int64_t)st.st_blocks * 512);
	cli_json_add_str(o, "untrusted-refusal", cli_errmsg(err));
	cli_json_print(o);
	cli_json_free(o);
	return 1;
}

int cmd_info(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_BACKING_CHAIN };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *filename;
	int output = CLI_OUTPUT_HUMAN;
	bool chain = false;
	unsigned flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_IO | cli_untrusted();
	struct cli_json *list = NULL;
	struct img *img, *cur;
	int c, ret;

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
		case OPT_BACKING_CHAIN:
			chain = true;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting one image file name");
	filename = argv[optind];
	if (!chain)
		flags |= IMG_OPEN_NO_BACKING;

	ret = cli_open(filename, fmt, flags, IMG_IO_AUTO, &img);
	if (ret == -EPERM && cli_untrusted() && output == CLI_OUTPUT_JSON)
		return print_refusal(filename, fmt, ret);
	if (ret < 0)
		return 1;
	if (chain && output == CLI_OUTPUT_JSON)
		list = cli_json_array();
	for (cur = img; cur; cur = chain ? img_backing(cur) : NULL) {
		struct img_info in;
		const char *name = cur == img ? filename : img_filename(cur);

		memset(&in, 0, sizeof(in));
		img_clear_error();
		ret = img_info(cur, &in);
		if (ret < 0) {
			cli_json_free(list);
			img_close(img);
			return cli_fail_img(1, ret, name);
		}
		if (!in.format)
			in.format = img_format(cur);
		if (output == CLI_OUTPUT_JSON) {
			struct cli_json *o = info_object(cur, &in, name);

			if (list) {
				cli_json_add(list, NULL, o);
			} else {
				cli_json_print(o);
				cli_json_free(o);
			}
		} else {
			if (cur != img)
				printf("\n");
			print_human(cur, &in, name);
		}
	}
	if (list) {
		cli_json_print(list);
		cli_json_free(list);
	}
	img_close(img);
	return 0;
}
