/* SPDX-License-Identifier: MIT */
/*
 * img io: a qemu-io compatible subset for tests and scripts. Each -c string
 * (or each stdin line when no -c is given) is one command: read, write,
 * discard (trim), flush, map, info, help. Output lines, including the
 * "wrote N/N bytes at offset X" report, the timing line, -v hex dumps and
 * "Pattern verification failed" messages, are printed as qemu-io 7.2 prints
 * them. The exit code is 1 if any command failed, else 0.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define IO_MAX_ARGS 64

struct io_ctx {
	struct img *img;
	bool quiet; /* global -q */
};

struct io_cmd {
	const char *name;
	const char *altname;
	int (*fn)(struct io_ctx *ctx, int argc, char **argv);
	const char *args;
	const char *oneline;
};

static double elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* qemu-io's timestr(): "00.00 sec", or "H:MM:SS.ss" past one second. */
static void timestr(double t, char *buf, size_t size)
{
	unsigned long secs = (unsigned long)t;
	double frac = t - (double)secs;

	if (secs)
		snprintf(buf, size, "%lu:%02lu:%05.2f", secs / 3600,
			 (secs / 60) % 60, (double)(secs % 60) + frac);
	else
		snprintf(buf, size, "%05.2f sec", frac);
}

static void print_report(const char *op, double t, uint64_t off, uint64_t count,
			 uint64_t total, int ops)
{
	char s1[64], s2[64], ts[64];

	if (t <= 0)
		t = 1e-9;
	timestr(t, ts, sizeof(ts));
	cli_cvtstr((double)total, s1, sizeof(s1));
	cli_cvtstr((double)total / t, s2, sizeof(s2));
	printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", op,
	       total, count, off);
	printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, ops, ts, s2,
	       (double)ops / t);
}

static void dump_buffer(const uint8_t *p, uint64_t off, uint64_t len)
{
	uint64_t i;
	int j;

	for (i = 0; i < len; i += 16) {
		const uint8_t *s = p;

		printf("%08" PRIx64 ":  ", off + i);
		for (j = 0; j < 16 && i + j < len; j++, p++)
			printf("%02x ", *p);
		printf(" ");
		for (j = 0; j < 16 && i + j < len; j++, s++)
			putchar(isalnum(*s) ? *s : '.');
		printf("\n");
	}
}

static int cvtnum(const char *arg, uint64_t *out)
{
	if (img_parse_size(arg, out) < 0 || *out > INT64_MAX) {
		printf("Parsing error: non-numeric argument, or "
		       "extraneous/unrecognized suffix -- %s\n",
		       arg);
		return -EINVAL;
	}
	return 0;
}

static int parse_pattern(const char *arg, int *pattern)
{
	char *end;
	long v = strtol(arg, &end, 0);

	if (!*arg || *end || v < 0 || v > 255) {
		printf("%s is not a valid pattern byte\n", arg);
		return -EINVAL;
	}
	*pattern = (int)v;
	return 0;
}

/*
 * Split the options of one command: flags in "flags", options taking a
 * value in "with_arg". Returns the index of the first positional argument,
 * or -1 after printing an error. Options stop at the first positional.
 */
struct io_opt {
	char c;
	const char *val;
};

static int io_getopt(int argc, char **argv, const char *flags,
		     const char *with_arg, struct io_opt *opts, int *n_opts)
{
	int i;

	*n_opts = 0;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (a[0] != '-' || !a[1])
			break;
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		for (a++; *a; a++) {
			if (*n_opts >= IO_MAX_ARGS)
				return -1;
			if (strchr(with_arg, *a)) {
				const char *v = a[1] ? a + 1 : argv[++i];

				if (!v || i >= argc) {
					fprintf(stderr,
						"%s: option requires an "
						"argument -- '%c'\n",
						argv[0], *a);
					return -1;
				}
				opts[(*n_opts)++] = (struct io_opt){ *a, v };
				break;
			} else if (strchr(flags, *a)) {
				opts[(*n_opts)++] = (struct io_opt){ *a, NULL };
			} else {
				fprintf(stderr, "%s: invalid option -- '%c'\n",
					argv[0], *a);
				return -1;
			}
		}
	}
	return i;
}

static int usage_of(const struct io_cmd *c);

/* off/len positional pair; prints qemu-io's errors. */
static int off_len(int argc, char **argv, int first, const struct io_cmd *c,
		   uint64_t *off, uint64_t *len)
{
	if (argc - first != 2) {
		if (argc - 1 < 2)
			fprintf(stderr,
				"bad argument count %d to %s, expected at "
				"least 2 arguments\n",
				argc - 1, argv[0]);
		else
			usage_of(c);
		return -EINVAL;
	}
	if (cvtnum(argv[first], off) < 0 || cvtnum(argv[first + 1], len) < 0)
		return -EINVAL;
	return 0;
}

/* Requests past the end fail as qemu's block layer fails them. */
static bool in_range(struct io_ctx *ctx, uint64_t off, uint64_t len)
{
	uint64_t size = img_size(ctx->img);

	return off <= size && len <= size - off;
}

static const struct io_cmd *find_cmd(const char *name);

static int read_f(struct io_ctx *ctx, int argc, char **argv)
{
	struct io_opt opts[IO_MAX_ARGS];
	bool verbose = false, quiet = ctx->quiet, has_pattern = false;
	uint64_t off, len, poff = 0, plen = 0;
	bool has_poff = false, has_plen = false;
	struct timespec t1, t2;
	int pattern = 0, n, i, first, ret;
	uint8_t *buf;

	first = io_getopt(argc, argv, "bCqv", "lPs", opts, &n);
	if (first < 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		switch (opts[i].c) {
		case 'v':
			verbose = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'P':
			has_pattern = true;
			if (parse_pattern(opts[i].val, &pattern) < 0)
				return -EINVAL;
			break;
		case 'l':
			has_plen = true;
			if (cvtnum(opts[i].val, &plen) < 0)
				return -EINVAL;
			break;
		case 's':
			has_poff = true;
			if (cvtnum(opts[i].val, &poff) < 0)
				return -EINVAL;
			break;
		case 'b':
		case 'C':
			break;
		}
	}
	if (off_len(argc, argv, first, find_cmd("read"), &off, &len) < 0)
		return -EINVAL;
	if (!has_pattern && (has_poff || has_plen)) {
		usage_of(find_cmd("read"));
		return -EINVAL;
	}
	if (!has_plen)
		plen = len - (poff < len ? poff : len);
	if (poff > len || plen > len - poff) {
		printf("pattern verification range exceeds end of read data\n");
		return -EINVAL;
	}
	if (!in_range(ctx, off, len)) {
		printf("read failed: %s\n", strerror(EIO));
		return -EIO;
	}
	buf = malloc(len ? len : 1);
	if (!buf) {
		printf("read failed: %s\n", strerror(ENOMEM));
		return -ENOMEM;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	img_clear_error();
	ret = len ? img_read(ctx->img, buf, off, len) : 0;
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (ret < 0) {
		printf("read failed: %s\n", strerror(-ret));
		free(buf);
		return ret;
	}
	if (has_pattern) {
		uint64_t k;

		for (k = poff; k < poff + plen; k++)
			if (buf[k] != (uint8_t)pattern)
				break;
		if (k < poff + plen) {
			printf("Pattern verification failed at offset %" PRIu64
			       ", %" PRIu64 " bytes\n",
			       off + poff, plen);
			ret = -EINVAL;
		}
	}
	if (!quiet && verbose)
		dump_buffer(buf, off, len);
	if (!quiet)
		print_report("read", elapsed(&t1, &t2), off, len, len, 1);
	free(buf);
	return ret;
}

static int write_f(struct io_ctx *ctx, int argc, char **argv)
{
	struct io_opt opts[IO_MAX_ARGS];
	bool quiet = ctx->quiet, zero = false, unmap = false, fua = false;
	bool has_pattern = false;
	uint64_t off, len;
	struct timespec t1, t2;
	int pattern = 0xcd, n, i, first, ret;
	uint8_t *buf = NULL;

	first = io_getopt(argc, argv, "bcCfnquz", "P", opts, &n);
	if (first < 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		switch (opts[i].c) {
		case 'q':
			quiet = true;
			break;
		case 'z':
			zero = true;
			break;
		case 'u':
			unmap = true;
			break;
		case 'f':
			fua = true;
			break;
		case 'P':
			has_pattern = true;
			if (parse_pattern(opts[i].val, &pattern) < 0)
				return -EINVAL;
			break;
		case 'c':
			printf("compressed writes are not supported\n");
			return -ENOTSUP;
		default:
			break;
		}
	}
	if (zero && has_pattern) {
		printf("Only one of -z, -P, and -s can be specified at the same time\n");
		return -EINVAL;
	}
	if (unmap && !zero) {
		printf("-u requires -z to be specified\n");
		return -EINVAL;
	}
	if (off_len(argc, argv, first, find_cmd("write"), &off, &len) < 0)
		return -EINVAL;
	if (img_read_only(ctx->img)) {
		fflush(stdout);
		fprintf(stderr, "img: Block node is read-only\n");
		return -EROFS;
	}
	if (!in_range(ctx, off, len)) {
		printf("write failed: %s\n", strerror(EIO));
		return -EIO;
	}
	if (!zero) {
		buf = malloc(len ? len : 1);
		if (!buf) {
			printf("write failed: %s\n", strerror(ENOMEM));
			return -ENOMEM;
		}
		memset(buf, pattern, len);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	img_clear_error();
	if (!len)
		ret = 0;
	else if (zero)
		ret = img_zero(ctx->img, off, len,
			       (unmap ? IMG_ZERO_MAY_UNMAP : 0) |
				       (fua ? IMG_FUA : 0));
	else
		ret = img_write(ctx->img, buf, off, len, fua ? IMG_FUA : 0);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	free(buf);
	if (ret < 0) {
		printf("write failed: %s\n", strerror(-ret));
		return ret;
	}
	if (!quiet)
		print_report("wrote", elapsed(&t1, &t2), off, len, len, 1);
	return 0;
}

static int discard_f(struct io_ctx *ctx, int argc, char **argv)
{
	struct io_opt opts[IO_MAX_ARGS];
	bool quiet = ctx->quiet;
	uint64_t off, len;
	struct timespec t1, t2;
	int n, i, first, ret;

	first = io_getopt(argc, argv, "Cq", "", opts, &n);
	if (first < 0)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (opts[i].c == 'q')
			quiet = true;
	if (off_len(argc, argv, first, find_cmd("discard"), &off, &len) < 0)
		return -EINVAL;
	if (img_read_only(ctx->img)) {
		fflush(stdout);
		fprintf(stderr, "img: Block node is read-only\n");
		return -EROFS;
	}
	if (!in_range(ctx, off, len)) {
		printf("discard failed: %s\n", strerror(EIO));
		return -EIO;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	img_clear_error();
	ret = len ? img_discard(ctx->img, off, len) : 0;
	clock_gettime(CLOCK_MONOTONIC, &t2);
	if (ret < 0) {
		printf("discard failed: %s\n", strerror(-ret));
		return ret;
	}
	if (!quiet)
		print_report("discard", elapsed(&t1, &t2), off, len, len, 1);
	return 0;
}

static int flush_f(struct io_ctx *ctx, int argc, char **argv)
{
	int ret;

	(void)argc;
	(void)argv;
	img_clear_error();
	ret = img_flush(ctx->img);
	if (ret < 0)
		printf("flush failed: %s\n", strerror(-ret));
	return ret;
}

static int map_f(struct io_ctx *ctx, int argc, char **argv)
{
	uint64_t off = 0, size = img_size(ctx->img);

	(void)argc;
	(void)argv;
	while (off < size) {
		struct img_extent ext;
		bool alloc;
		uint64_t num = 0;
		char s1[64], s2[64];
		int ret;

		/* merge this layer's extents of equal allocation status */
		do {
			img_clear_error();
			ret = img_block_status(ctx->img, off + num,
					       size - off - num,
					       IMG_BS_NO_CHAIN, &ext);
			if (ret < 0) {
				fflush(stdout);
				fprintf(stderr,
					"img: Failed to get allocation "
					"status: %s\n",
					cli_errmsg(ret));
				return ret;
			}
			if (!ext.len) {
				fflush(stdout);
				fprintf(stderr,
					"img: Unexpected end of image\n");
				return -EIO;
			}
			if (num == 0)
				alloc = ext.flags & IMG_EXT_ALLOCATED;
			else if (alloc != !!(ext.flags & IMG_EXT_ALLOCATED))
				break;
			num += ext.len;
		} while (off + num < size);
		cli_cvtstr((double)num, s1, sizeof(s1));
		cli_cvtstr((double)off, s2, sizeof(s2));
		printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64
		       ")\n",
		       s1, num, alloc ? "    allocated" : "not allocated", s2,
		       off);
		off += num;
	}
	return 0;
}

static int info_f(struct io_ctx *ctx, int argc, char **argv)
{
	struct img_info in;
	char s1[64], s2[64];
	size_t i;
	int ret;

	(void)argc;
	(void)argv;
	memset(&in, 0, sizeof(in));
	img_clear_error();
	ret = img_info(ctx->img, &in);
	if (ret < 0) {
		fflush(stdout);
		fprintf(stderr, "img: %s\n", cli_errmsg(ret));
		return ret;
	}
	printf("format name: %s\n", img_format(ctx->img));
	cli_cvtstr((double)in.cluster_size, s1, sizeof(s1));
	cli_cvtstr((double)in.vm_state_offset, s2, sizeof(s2));
	printf("cluster size: %s\n", s1);
	printf("vm state offset: %s\n", s2);
	if (in.n_fields) {
		struct cli_json *data = cli_json_object();

		for (i = 0; i < in.n_fields && i < IMG_INFO_MAX_FIELDS; i++) {
			const struct img_field *f = &in.fields[i];

			if (f->type == IMG_VAL_STR)
				cli_json_add_str(data, f->key, f->str);
			else if (f->type == IMG_VAL_U64)
				cli_json_add_int(data, f->key, (int64_t)f->u64);
			else
				cli_json_add_bool(data, f->key, f->b);
		}
		printf("Format specific information:\n");
		cli_json_dump_human(data, 1);
		cli_json_free(data);
	}
	return 0;
}

static int help_f(struct io_ctx *ctx, int argc, char **argv);

static const struct io_cmd io_cmds[] = {
	{ "read", "r", read_f,
	  "[-abCqv] [-P pattern [-s off] [-l len]] off len",
	  "reads a number of bytes at a specified offset" },
	{ "write", "w", write_f, "[-bcCfnquz] [-P pattern] off len",
	  "writes a number of bytes at a specified offset" },
	{ "discard", "d", discard_f, "[-Cq] off len",
	  "discards a number of bytes at a specified offset" },
	{ "trim", NULL, discard_f, "[-Cq] off len", "alias for discard" },
	{ "flush", "f", flush_f, "", "flush all in-core file state to disk" },
	{ "map", NULL, map_f, "", "prints the allocated areas of a file" },
	{ "info", "i", info_f, "",
	  "prints information about the current file" },
	{ "help", "?", help_f, "[command]", "help for one or all commands" },
	{ NULL, NULL, NULL, NULL, NULL },
};

static const struct io_cmd *find_cmd(const char *name)
{
	const struct io_cmd *c;

	for (c = io_cmds; c->name; c++)
		if (!strcmp(name, c->name) ||
		    (c->altname && !strcmp(name, c->altname)))
			return c;
	return NULL;
}

static int usage_of(const struct io_cmd *c)
{
	printf("%s %s -- %s\n", c->name, c->args, c->oneline);
	return 0;
}

static int help_f(struct io_ctx *ctx, int argc, char **argv)
{
	const struct io_cmd *c;

	(void)ctx;
	for (c = io_cmds; c->name; c++) {
		if (argc > 1 && strcmp(argv[1], c->name))
			continue;
		usage_of(c);
	}
	if (argc <= 1)
		printf("\nUse 'help commandname' for extended help.\n");
	return 0;
}

static int run_command(struct io_ctx *ctx, const char *line)
{
	char *copy = strdup(line), *save = NULL, *tok;
	char *argv[IO_MAX_ARGS + 1];
	const struct io_cmd *c;
	int argc = 0, ret;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, " \t\n", &save); tok && argc < IO_MAX_ARGS;
	     tok = strtok_r(NULL, " \t\n", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	if (argc == 0) {
		free(copy);
		return 0;
	}
	c = find_cmd(argv[0]);
	if (!c) {
		fflush(stdout);
		fprintf(stderr, "command \"%s\" not found\n", argv[0]);
		free(copy);
		return -EINVAL;
	}
	ret = c->fn(ctx, argc, argv);
	fflush(stdout);
	free(copy);
	return ret;
}

int cmd_io(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "cmd", required_argument, NULL, 'c' },
		{ "format", required_argument, NULL, 'f' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "nocache", no_argument, NULL, 'n' },
		{ "cache", required_argument, NULL, 't' },
		{ "aio", required_argument, NULL, 'i' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "quiet", no_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *filename;
	unsigned flags = 0;
	enum img_io_kind io_kind = IMG_IO_AUTO;
	struct io_ctx ctx = { 0 };
	char **cmds;
	int n_cmds = 0, c, i, failed = 0;

	cmds = calloc((size_t)argc + 1, sizeof(*cmds));
	if (!cmds)
		return cli_fail(1, "out of memory");
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hc:f:rnt:i:Uq", longopts,
				NULL)) != -1) {
		switch (c) {
		case 'c':
			cmds[n_cmds++] = optarg;
			break;
		case 'f':
			fmt = optarg;
			break;
		case 'r':
			flags |= IMG_OPEN_RDONLY;
			break;
		case 'n':
			flags |= IMG_OPEN_DIRECT;
			break;
		case 't':
			img_clear_error();
			if (cli_parse_cache(optarg, &flags) < 0) {
				free(cmds);
				return cli_fail(1, "Invalid cache option: %s",
						optarg);
			}
			break;
		case 'i':
			img_clear_error();
			if (cli_parse_aio(optarg, &io_kind) < 0) {
				free(cmds);
				return cli_fail(1, "Invalid aio option: %s",
						optarg);
			}
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		case 'q':
			ctx.quiet = true;
			break;
		default:
			free(cmds);
			return cli_bad_option(argv, c);
		}
	}
	if (optind != argc - 1) {
		free(cmds);
		return cli_usage_error(1, "Expecting one image file name");
	}
	filename = argv[optind];

	{
		struct img_open_opts o = {
			.format = fmt,
			.flags = flags,
			.io = io_kind,
		};
		int ret;

		img_clear_error();
		cli_secret_open_opts(filename, &o);
		ret = img_open(filename, &o, &ctx.img);
		if (ret < 0 && cli_secret_prompt(filename, &o, ret))
			ret = img_open(filename, &o, &ctx.img);
		if (ret < 0) {
			free(cmds);
			return cli_fail(1, "can't open device %s: %s", filename,
					cli_errmsg(ret));
		}
	}
	if (n_cmds) {
		for (i = 0; i < n_cmds; i++)
			if (run_command(&ctx, cmds[i]) < 0)
				failed = 1;
	} else {
		char line[4096];

		while (fgets(line, sizeof(line), stdin)) {
			if (!strncmp(line, "quit", 4) ||
			    !strncmp(line, "q\n", 2))
				break;
			if (run_command(&ctx, line) < 0)
				failed = 1;
		}
	}
	free(cmds);
	if (img_close(ctx.img) < 0) {
		cli_fail(1, "%s: %s", filename, cli_errmsg(-EIO));
		failed = 1;
	}
	return failed;
}
