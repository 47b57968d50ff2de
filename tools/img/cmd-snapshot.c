/* SPDX-License-Identifier: MIT */
/*
 * img snapshot: qemu-img snapshot's -l/-c/-a/-d on internal snapshots, with
 * its table layout, messages and exit codes; -l --output=json prints the
 * "snapshots" array of qemu-img info. Beyond qemu-img, --diff A [B] IMAGE
 * lists the guest ranges whose contents may differ between snapshot A and
 * snapshot B (or the live image): ranges where the two L2 mappings differ
 * (the same host offset means the same data; for raw data in Ceph RBD,
 * what librbd reports changed). Also the snapshot parts of
 * img info and the snapshot open that convert -l uses.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int cli_open_snapshot(const char *path, const char *fmt, unsigned flags,
		      const char *snapshot, struct img **out)
{
	struct img_open_opts o = {
		.format = fmt,
		.flags = flags | IMG_OPEN_RDONLY,
		.snapshot = snapshot,
	};
	int ret;

	img_clear_error();
	ret = img_open(path, &o, out);
	if (ret < 0)
		cli_fail(1, "Could not open '%s': %s", path, cli_errmsg(ret));
	return ret;
}

/* One row of qemu's bdrv_snapshot_dump (NULL: the header), no newline. */
static void dump_row(const struct img_snapshot_info *sn)
{
	char date[32] = "", clock[64], size[32], icount[32] = "";
	uint64_t secs;
	time_t ti;
	struct tm tm;

	if (!sn) {
		printf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE",
		       "DATE", "VM CLOCK", "ICOUNT");
		return;
	}
	ti = (time_t)sn->date_sec;
	if (localtime_r(&ti, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	secs = sn->vm_clock_nsec / 1000000000;
	snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d",
		 (int)(secs / 3600), (int)((secs / 60) % 60), (int)(secs % 60),
		 (int)((sn->vm_clock_nsec / 1000000) % 1000));
	cli_human_size(sn->vm_state_size, size, sizeof(size));
	if (sn->icount != UINT64_MAX)
		snprintf(icount, sizeof(icount), "%" PRId64,
			 (int64_t)sn->icount);
	printf("%-9s %-16s %8s%20s%13s%11s", sn->id, sn->name, size, date,
	       clock, icount);
}

static void dump_table(const struct img_snapshot_info *list, size_t n)
{
	printf("Snapshot list:\n");
	dump_row(NULL);
	printf("\n");
	for (size_t i = 0; i < n; i++) {
		dump_row(&list[i]);
		printf("\n");
	}
}

static struct cli_json *snapshots_json(const struct img_snapshot_info *list,
				       size_t n)
{
	struct cli_json *arr = cli_json_array();

	for (size_t i = 0; i < n; i++) {
		const struct img_snapshot_info *sn = &list[i];
		struct cli_json *o = cli_json_object();

		/* QAPI SnapshotInfo order */
		cli_json_add_str(o, "id", sn->id);
		cli_json_add_str(o, "name", sn->name);
		cli_json_add_int(o, "vm-state-size",
				 (int64_t)sn->vm_state_size);
		cli_json_add_int(o, "date-sec", (int64_t)sn->date_sec);
		cli_json_add_int(o, "date-nsec", (int64_t)sn->date_nsec);
		cli_json_add_int(o, "vm-clock-sec",
				 (int64_t)(sn->vm_clock_nsec / 1000000000));
		cli_json_add_int(o, "vm-clock-nsec",
				 (int64_t)(sn->vm_clock_nsec % 1000000000));
		if (sn->icount != UINT64_MAX)
			cli_json_add_int(o, "icount", (int64_t)sn->icount);
		cli_json_add(arr, NULL, o);
	}
	return arr;
}

void cli_snapshot_info_human(struct img *img)
{
	struct img_snapshot_info *list;
	size_t n;

	if (img_snapshot_list(img, &list, &n) < 0)
		return;
	if (n)
		dump_table(list, n);
	img_snapshot_list_free(list, n);
}

void cli_snapshot_info_json(struct img *img, struct cli_json *obj)
{
	struct img_snapshot_info *list;
	size_t n;

	if (img_snapshot_list(img, &list, &n) < 0)
		return;
	if (n)
		cli_json_add(obj, "snapshots", snapshots_json(list, n));
	img_snapshot_list_free(list, n);
}

static int do_list(struct img *img, int output)
{
	struct img_snapshot_info *list = NULL;
	size_t n = 0;
	int ret;

	ret = img_snapshot_list(img, &list, &n);
	if (ret < 0 && ret != -ENOTSUP)
		return cli_fail(1, "Could not list snapshots: %s",
				cli_errmsg(ret));
	if (output == CLI_OUTPUT_JSON) {
		struct cli_json *arr = snapshots_json(list, n);

		cli_json_print(arr);
		cli_json_free(arr);
	} else if (n) {
		dump_table(list, n);
	}
	img_snapshot_list_free(list, n);
	return 0;
}

/* Same contents for sure: same host data, or both zero, or both falling
 * through to the (same) backing file. */
static bool same_mapping(const struct img_extent *a, const struct img_extent *b)
{
	if (!(a->flags & IMG_EXT_ALLOCATED) && !(b->flags & IMG_EXT_ALLOCATED))
		return true;
	if ((a->flags & IMG_EXT_ZERO) && (b->flags & IMG_EXT_ZERO))
		return true;
	return (a->flags & IMG_EXT_OFFSET_VALID) &&
	       (b->flags & IMG_EXT_OFFSET_VALID) &&
	       !(a->flags & IMG_EXT_ZERO) && !(b->flags & IMG_EXT_ZERO) &&
	       a->file_off == b->file_off;
}

struct diff_out {
	int output;
	struct cli_json *arr;
	uint64_t start, len; /* pending range */
};

static void diff_emit(struct diff_out *d)
{
	if (!d->len)
		return;
	if (d->output == CLI_OUTPUT_JSON) {
		struct cli_json *o = cli_json_object();

		cli_json_add_int(o, "start", (int64_t)d->start);
		cli_json_add_int(o, "length", (int64_t)d->len);
		cli_json_add(d->arr, NULL, o);
	} else {
		printf("%#-16" PRIx64 " %#-16" PRIx64 "\n", d->start, d->len);
	}
	d->len = 0;
}

static void diff_add(struct diff_out *d, uint64_t off, uint64_t len)
{
	if (d->len && d->start + d->len == off) {
		d->len += len;
		return;
	}
	diff_emit(d);
	d->start = off;
	d->len = len;
}

/*
 * Raw data in Ceph RBD has no host offsets to compare: the name of snapshot
 * name_or_id of a (*name, malloc'd) for img_changed; *name NULL for others.
 */
static int diff_rbd_from(struct img *a, const char *name_or_id, char **name)
{
	struct img_snapshot_info *list;
	size_t n, i;
	bool changed;
	uint64_t len;
	int ret;

	*name = NULL;
	if (img_changed(a, NULL, 0, 0, 0, &changed, &len) < 0) {
		img_clear_error();
		return 0;
	}
	ret = img_snapshot_list(a, &list, &n);
	if (ret < 0)
		return ret;
	for (i = 0; i < n && strcmp(list[i].id, name_or_id); i++)
		;
	for (size_t k = 0; i == n && k < n; k++)
		if (!strcmp(list[k].name, name_or_id))
			i = k;
	ret = i == n ? -ENOENT : !(*name = strdup(list[i].name)) ? -ENOMEM : 0;
	img_snapshot_list_free(list, n);
	return ret;
}

static int diff(struct img *a, struct img *b, const char *rbd_from, int output)
{
	uint64_t sa = img_size(a), sb = img_size(b);
	uint64_t common = sa < sb ? sa : sb, end = sa > sb ? sa : sb;
	struct diff_out d = { .output = output };
	uint64_t off = 0;
	int ret = 0;

	if (output == CLI_OUTPUT_JSON)
		d.arr = cli_json_array();
	else
		printf("%-16s %-16s\n", "Offset", "Length");
	while (off < common) {
		struct img_extent ea, eb;
		uint64_t n;

		if (rbd_from) {
			bool changed;

			ret = img_changed(b, rbd_from, 0, off, common - off,
					  &changed, &n);
			if (ret < 0)
				break;
			if (changed)
				diff_add(&d, off, n);
			off += n;
			continue;
		}
		ret = img_block_status(a, off, common - off, IMG_BS_NO_CHAIN,
				       &ea);
		if (ret == 0)
			ret = img_block_status(b, off, common - off,
					       IMG_BS_NO_CHAIN, &eb);
		if (ret < 0)
			break;
		n = ea.len < eb.len ? ea.len : eb.len;
		if (!same_mapping(&ea, &eb))
			diff_add(&d, off, n);
		off += n;
	}
	if (ret == 0 && end > common)
		diff_add(&d, common, end - common);
	diff_emit(&d);
	if (ret < 0) {
		cli_json_free(d.arr);
		return cli_fail(1, "Could not compare snapshots: %s",
				cli_errmsg(ret));
	}
	if (d.arr) {
		cli_json_print(d.arr);
		cli_json_free(d.arr);
	}
	return 0;
}

static int do_diff(int nargs, char **args, const char *fmt, unsigned flags,
		   int output)
{
	const char *path = args[nargs - 1];
	struct img *a, *b;
	char *rbd_from;
	int ret;

	if (cli_open_snapshot(path, fmt, flags | IMG_OPEN_NO_BACKING, args[0],
			      &a) < 0)
		return 1;
	if (nargs == 3)
		ret = cli_open_snapshot(path, fmt, flags | IMG_OPEN_NO_BACKING,
					args[1], &b);
	else
		ret = cli_open(path, fmt,
			       flags | IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING,
			       IMG_IO_AUTO, &b);
	if (ret < 0) {
		img_close(a);
		return 1;
	}
	ret = diff_rbd_from(a, args[0], &rbd_from);
	ret = ret < 0 ? cli_fail(1, "Could not compare snapshots: %s",
				 cli_errmsg(ret)) :
			diff(a, b, rbd_from, output);
	free(rbd_from);
	img_close(a);
	img_close(b);
	return ret;
}

/* qemu-img snapshot -d looks up names only (-a takes ids too). */
static int delete_by_name(struct img *img, const char *name)
{
	struct img_snapshot_info *list;
	size_t n, i;
	int ret;

	ret = img_snapshot_list(img, &list, &n);
	if (ret < 0)
		return ret;
	for (i = 0; i < n && strcmp(list[i].name, name); i++)
		;
	ret = i < n ? img_snapshot_delete(img, list[i].id) : -ENOENT;
	img_snapshot_list_free(list, n);
	return ret;
}

enum action { ACT_NONE, ACT_LIST, ACT_CREATE, ACT_APPLY, ACT_DELETE };

static int run_action(struct img *img, enum action act, const char *name)
{
	int ret;

	img_clear_error();
	switch (act) {
	case ACT_CREATE:
		ret = img_snapshot_create(img, name);
		if (ret < 0)
			return cli_fail(
				1, "Could not create snapshot '%s': %d (%s)",
				name, ret,
				ret == -ENOTSUP ? "Operation not supported" :
						  cli_errmsg(ret));
		return 0;
	case ACT_APPLY:
		ret = img_snapshot_apply(img, name);
		if (ret < 0)
			return cli_fail(
				1,
				"Could not apply snapshot '%s': Failed to load snapshot: %s",
				name,
				ret == -ENOENT ? "No such file or directory" :
						 cli_errmsg(ret));
		return 0;
	case ACT_DELETE:
		ret = delete_by_name(img, name);
		if (ret < 0)
			return cli_fail(1, "Could not delete snapshot '%s': %s",
					name,
					ret == -ENOENT ? "snapshot not found" :
							 cli_errmsg(ret));
		return 0;
	default:
		return 0;
	}
}

int cmd_snapshot(int argc, char **argv)
{
	enum { OPT_OUTPUT = 256, OPT_DIFF };
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "format", required_argument, NULL, 'f' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "diff", no_argument, NULL, OPT_DIFF },
		{ NULL, 0, NULL, 0 },
	};
	const char *fmt = NULL, *name = NULL;
	enum action act = ACT_NONE;
	int output = CLI_OUTPUT_HUMAN;
	unsigned flags = IMG_OPEN_NO_BACKING;
	bool want_diff = false;
	struct img *img;
	int c, ret;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:la:c:d:qU", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			fmt = optarg;
			break;
		case 'l':
		case 'a':
		case 'c':
		case 'd':
			if (act != ACT_NONE)
				return cli_usage_error(
					1, "Cannot mix '-l', '-a', '-c', '-d'");
			act = c == 'l' ? ACT_LIST :
			      c == 'a' ? ACT_APPLY :
			      c == 'c' ? ACT_CREATE :
					 ACT_DELETE;
			name = optarg;
			break;
		case 'q':
			break;
		case 'U':
			flags |= IMG_OPEN_SHARED;
			break;
		case OPT_OUTPUT:
			if (cli_parse_output(optarg, &output) < 0)
				return 1;
			break;
		case OPT_DIFF:
			want_diff = true;
			break;
		default:
			return cli_bad_option(argv, c);
		}
	}
	if (want_diff) {
		if (act != ACT_NONE)
			return cli_usage_error(
				1,
				"--diff cannot be mixed with -l, -a, -c, -d");
		if (argc - optind != 2 && argc - optind != 3)
			return cli_usage_error(
				1,
				"Expecting --diff SNAPSHOT [SNAPSHOT] FILENAME");
		return do_diff(argc - optind, argv + optind, fmt, flags,
			       output);
	}
	if (optind != argc - 1)
		return cli_usage_error(1, "Expecting one image file name");
	if (act == ACT_NONE || act == ACT_LIST)
		flags |= IMG_OPEN_RDONLY;
	else if (flags & IMG_OPEN_SHARED)
		return cli_usage_error(
			1, "--force-share/-U is only allowed with -l");
	if (cli_open(argv[optind], fmt, flags, IMG_IO_AUTO, &img) < 0)
		return 1;
	if (act == ACT_LIST)
		ret = do_list(img, output);
	else
		ret = run_action(img, act, name);
	if (img_close(img) < 0 && ret == 0)
		ret = cli_fail(1, "%s", cli_errmsg(-EIO));
	return ret;
}

int cli_snapshot_param(const char *arg, const char **out)
{
	static char value[1024];
	const char *id = NULL, *name = NULL, *p = arg;
	size_t id_len = 0, name_len = 0;

	if (strncmp(arg, "snapshot.", 9)) {
		*out = arg;
		return 0;
	}
	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (!strncmp(p, "snapshot.id=", 12)) {
			id = p + 12;
			id_len = len - 12;
		} else if (!strncmp(p, "snapshot.name=", 14)) {
			name = p + 14;
			name_len = len - 14;
		} else {
			return cli_fail(1,
					"Failed in parsing snapshot param '%s'",
					arg);
		}
		p += len + (end != NULL);
	}
	/* The id is unique; lookups try ids first. */
	if (id)
		snprintf(value, sizeof(value), "%.*s", (int)id_len, id);
	else if (name)
		snprintf(value, sizeof(value), "%.*s", (int)name_len, name);
	else
		return cli_fail(1, "Failed in parsing snapshot param '%s'",
				arg);
	*out = value;
	return 0;
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return !len || (!p[0] && !memcmp(p, p + 1, len - 1));
}

/*
 * Bring dst from the contents of prev (NULL: all zero) to those of cur,
 * writing only where the two may differ (their mappings differ), so that
 * clusters unchanged between snapshots stay shared in dst.
 */
static int copy_changes(struct img *prev, struct img *cur, struct img *dst,
			uint8_t *buf, size_t buf_size)
{
	uint64_t size = img_size(cur), off = 0;
	int ret = 0;

	while (off < size && ret == 0) {
		struct img_extent ec, ep, full;
		uint64_t n = size - off;

		ret = img_block_status(cur, off, n, 0, &full);
		if (ret < 0)
			break;
		n = full.len;
		if (prev && off < img_size(prev)) {
			n = min64(n, img_size(prev) - off);
			ret = img_block_status(cur, off, n, IMG_BS_NO_CHAIN,
					       &ec);
			if (ret == 0)
				ret = img_block_status(prev, off, n,
						       IMG_BS_NO_CHAIN, &ep);
			if (ret < 0)
				break;
			n = min64(ec.len, ep.len);
			if (same_mapping(&ec, &ep)) {
				off += n;
				continue;
			}
		}
		n = min64(n, buf_size);
		if (full.flags & IMG_EXT_ZERO) {
			if (prev)
				ret = img_zero(dst, off, n, IMG_ZERO_MAY_UNMAP);
		} else {
			ret = img_read(cur, buf, off, n);
			if (ret == 0 && all_zero(buf, n))
				ret = prev ? img_zero(dst, off, n,
						      IMG_ZERO_MAY_UNMAP) :
					     0;
			else if (ret == 0)
				ret = img_write(dst, buf, off, n, 0);
		}
		off += n;
	}
	return ret;
}

/*
 * copy_changes for raw data in Ceph RBD, where host offsets say nothing:
 * bring dst from snapshot from of cur's RBD image (NULL: all zero) to cur,
 * writing what librbd reports changed.
 */
static int copy_rbd_changes(const char *from, struct img *cur, struct img *dst,
			    uint8_t *buf, size_t buf_size)
{
	uint64_t size = img_size(cur), off = 0;
	int ret = 0;

	while (off < size && ret == 0) {
		bool changed;
		uint64_t n;

		ret = img_changed(cur, from, 0, off, size - off, &changed, &n);
		if (ret < 0 || !changed) {
			off += ret < 0 ? 0 : n;
			continue;
		}
		n = min64(n, buf_size);
		ret = img_read(cur, buf, off, n);
		if (ret == 0 && all_zero(buf, n))
			ret = from ? img_zero(dst, off, n, IMG_ZERO_MAY_UNMAP) :
				     0;
		else if (ret == 0)
			ret = img_write(dst, buf, off, n, 0);
		off += n;
	}
	return ret;
}

int cli_convert_snapshots(const char *src_path, const char *src_fmt,
			  unsigned src_flags, struct img *src, struct img *dst)
{
	const size_t buf_size = 1 << 20;
	struct img_snapshot_info *list = NULL;
	struct img *prev = NULL, *view;
	uint8_t *buf = malloc(buf_size);
	size_t n = 0;
	bool rbd, changed;
	uint64_t len;
	int ret;

	if (!buf)
		return cli_fail(1, "convert: out of memory");
	rbd = img_changed(src, NULL, 0, 0, 0, &changed, &len) == 0;
	img_clear_error();
	ret = img_snapshot_list(src, &list, &n);
	if (ret < 0) {
		free(buf);
		return cli_fail(
			1, "convert: cannot list the snapshots of '%s': %s",
			src_path, cli_errmsg(ret));
	}
	for (size_t i = 0; i <= n && ret == 0; i++) {
		const char *what = i < n ? list[i].name : "the live image";

		if (i < n) {
			ret = cli_open_snapshot(src_path, src_fmt, src_flags,
						list[i].id, &view);
			if (ret < 0)
				break;
		} else {
			view = src;
		}
		img_clear_error();
		if (img_size(view) != img_size(dst))
			ret = img_resize(dst, img_size(view), IMG_RESIZE_SHRINK,
					 IMG_PREALLOC_OFF);
		if (ret == 0 && rbd)
			ret = copy_rbd_changes(i ? list[i - 1].name : NULL,
					       view, dst, buf, buf_size);
		else if (ret == 0)
			ret = copy_changes(prev, view, dst, buf, buf_size);
		if (ret == 0 && i < n)
			ret = img_snapshot_create(dst, list[i].name);
		if (ret < 0)
			cli_fail(1, "convert: copying %s: %s", what,
				 cli_errmsg(ret));
		if (prev != src)
			img_close(prev);
		prev = view;
	}
	if (prev != src)
		img_close(prev);
	img_snapshot_list_free(list, n);
	free(buf);
	return ret < 0 ? 1 : 0;
}
