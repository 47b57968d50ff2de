/* SPDX-License-Identifier: MIT */
/*
 * qcow2 internal snapshots against a reference model: a seeded stream of
 * writes, zeroes, discards, snapshot creates, applies, deletes and reopens
 * (and resizes, growing and shrinking) runs on an image and on a model holding
 * the live contents and every snapshot's contents and size; the live image and (through read-only snapshot views)
 * every snapshot must match the model throughout, and at the end check must
 * find no corruption and no leak (qemu-img check too, when installed). Also:
 * an image with 100 snapshots; and crash replay (every prefix of the host
 * writes of a snapshot operation, and shuffled subsets of the writes between
 * two flushes) and fault injection (each host op of
 * create, apply and delete failing in turn, once sticky as a dead disk, once
 * a single error after which the image stays in use). After a crash or
 * fault the image
 * must check with nothing worse than leaks and COPIED flags that `check -r
 * all` repairs (a refcount raised before the flag was cleared), the live disk
 * must hold the contents before or after the operation, every listed
 * snapshot its own contents, and overwriting the whole live disk must leave
 * every snapshot intact (no shared cluster is written in place).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2-testlib.h"
#include "tap.h"

#define MAX_SNAPS 16

struct model {
	uint64_t size;
	uint8_t *cur;
	struct {
		char name[16];
		uint8_t *data;
		uint64_t size;
	} sn[MAX_SNAPS];
	unsigned next_name;
};

static int open_view(struct img_io *mem, const char *snap, unsigned flags,
		     struct img **out)
{
	struct img_open_opts o = {
		.format = "qcow2",
		.flags = flags | IMG_OPEN_NO_REPAIR,
		.snapshot = snap,
	};
	struct img_io *b;
	int ret = qt_io_borrow(mem, &b);

	return ret < 0 ? ret : img_open_io(b, NULL, &o, out);
}

static void model_free(struct model *m)
{
	free(m->cur);
	for (int i = 0; i < MAX_SNAPS; i++)
		free(m->sn[i].data);
	memset(m, 0, sizeof(*m));
}

static int find_sn(const struct model *m, const char *name)
{
	for (int i = 0; i < MAX_SNAPS; i++)
		if (m->sn[i].data && !strcmp(m->sn[i].name, name))
			return i;
	return -1;
}

/* Every snapshot the image lists must be in m with the same contents; with
 * exact, the image must list exactly m's snapshots. */
static bool verify_snapshots(struct img_io *mem, const struct model *m,
			     bool exact, const char *what)
{
	struct img_snapshot_info *list;
	struct img *img;
	size_t n, want = 0;
	bool ok = true;

	if (open_view(mem, NULL, IMG_OPEN_RDONLY, &img) < 0) {
		printf("# %s: open failed: %s\n", what, img_last_error());
		return false;
	}
	if (img_snapshot_list(img, &list, &n) < 0) {
		printf("# %s: list failed: %s\n", what, img_last_error());
		img_close(img);
		return false;
	}
	img_close(img);
	for (int i = 0; i < MAX_SNAPS; i++)
		want += m->sn[i].data != NULL;
	if (exact && n != want) {
		printf("# %s: %zu snapshots listed, %zu expected\n", what, n,
		       want);
		ok = false;
	}
	for (size_t i = 0; ok && i < n; i++) {
		int k = find_sn(m, list[i].name);
		struct img *v;

		if (k < 0) {
			printf("# %s: unexpected snapshot '%s'\n", what,
			       list[i].name);
			ok = false;
			break;
		}
		if (open_view(mem, list[i].id, IMG_OPEN_RDONLY, &v) < 0) {
			printf("# %s: view of '%s' failed: %s\n", what,
			       list[i].name, img_last_error());
			ok = false;
			break;
		}
		ok = img_size(v) == m->sn[k].size &&
		     qt_compare(v, m->sn[k].data, 0, m->sn[k].size,
				list[i].name);
		img_close(v);
	}
	img_snapshot_list_free(list, n);
	return ok;
}

/* ---- the model test ---- */

struct variant {
	const char *name;
	const char *opts;
	uint64_t size, cluster_size;
	unsigned max_snaps; /* creates beyond this fail -ERANGE */
	bool qemu_check; /* also run qemu-img check (slow on a busy host) */
};

static const struct variant variants[] = {
	{ "4k", "cluster_size=4096", 2 << 20, 4096, MAX_SNAPS, true },
	{ "512 refcount_bits=64", "cluster_size=512,refcount_bits=64", 1 << 20,
	  512, MAX_SNAPS, false },
	{ "64k extended_l2", "cluster_size=65536,extended_l2=on", 4 << 20,
	  65536, MAX_SNAPS, true },
	{ "compat 0.10", "compat=0.10,cluster_size=4096", 2 << 20, 4096,
	  MAX_SNAPS, true },
	{ "lazy_refcounts", "cluster_size=4096,lazy_refcounts=on", 2 << 20,
	  4096, MAX_SNAPS, false },
	{ "refcount_bits=4", "cluster_size=4096,refcount_bits=4", 2 << 20, 4096,
	  14, false },
};

static bool run_model(const struct variant *v, struct qt_rng *rng)
{
	struct model m = { .size = v->size };
	uint8_t *buf = malloc(4 * v->cluster_size);
	struct img_io *mem = NULL;
	struct img *img = NULL;
	unsigned n_snaps = 0;
	bool ok = true;
	int ret;

	/* Resizes stay within [size / 2, 2 * size]. */
	m.cur = calloc(1, 2 * v->size);
	if (!buf || !m.cur ||
	    qt_create_mem(v->opts, v->size, NULL, NULL, &mem) < 0 ||
	    qt_open_borrowed(mem, 0, &img) < 0) {
		printf("# %s: setup failed: %s\n", v->name, img_last_error());
		ok = false;
		goto out;
	}
	for (int op = 0; op < 400 && ok; op++) {
		unsigned r = (unsigned)qt_below(rng, 100);
		int k = (int)qt_below(rng, MAX_SNAPS);

		if (r < 50) {
			uint64_t len = 1 + qt_below(rng, 3 * v->cluster_size);
			uint64_t off = qt_below(rng, m.size - len);

			qt_fill(rng, buf, len);
			ret = img_write(img, buf, off, len, 0);
			memcpy(m.cur + off, buf, len);
		} else if (r < 58) {
			uint64_t len = 1 + qt_below(rng, 4 * v->cluster_size);
			uint64_t off = qt_below(rng, m.size - len);

			ret = img_zero(img, off, len,
				       r & 1 ? IMG_ZERO_MAY_UNMAP : 0);
			memset(m.cur + off, 0, len);
		} else if (r < 63) {
			uint64_t len = 1 + qt_below(rng, 4 * v->cluster_size);
			uint64_t off = qt_below(rng, m.size - len);

			ret = img_discard(img, off, len);
			if (ret == 0)
				ret = img_read(img, m.cur + off, off, len);
		} else if (r < 75) {
			if (m.sn[k].data)
				continue;
			snprintf(m.sn[k].name, sizeof(m.sn[k].name), "s%u",
				 m.next_name++);
			ret = img_snapshot_create(img, m.sn[k].name);
			if (n_snaps >= v->max_snaps) {
				CHECK_ERR(ret, -ERANGE);
				continue;
			}
			m.sn[k].data = malloc(m.size);
			if (!m.sn[k].data)
				break;
			memcpy(m.sn[k].data, m.cur, m.size);
			m.sn[k].size = m.size;
			n_snaps++;
		} else if (r < 83) {
			if (!m.sn[k].data)
				continue;
			ret = img_snapshot_apply(img, m.sn[k].name);
			m.size = m.sn[k].size;
			memcpy(m.cur, m.sn[k].data, m.size);
		} else if (r < 91) {
			if (!m.sn[k].data)
				continue;
			ret = img_snapshot_delete(img, m.sn[k].name);
			free(m.sn[k].data);
			m.sn[k].data = NULL;
			n_snaps--;
		} else if (r < 93) {
			uint64_t size =
				v->size / 2 +
				qt_below(rng, 3 * v->size / 2 / 512 + 1) * 512;

			ret = img_resize(img, size, IMG_RESIZE_SHRINK,
					 IMG_PREALLOC_OFF);
			if (n_snaps && strstr(v->opts, "compat=0.10")) {
				CHECK_ERR(ret, -ENOTSUP);
				continue;
			}
			if (size > m.size)
				memset(m.cur + m.size, 0, size - m.size);
			m.size = size;
		} else if (r < 95) {
			ret = img_close(img);
			img = NULL;
			if (ret == 0)
				ret = qt_open_borrowed(mem, 0, &img);
		} else {
			ret = img_flush(img);
			ok = ret == 0 &&
			     qt_compare(img, m.cur, 0, m.size, "live") &&
			     verify_snapshots(mem, &m, true, v->name);
		}
		if (ret < 0) {
			printf("# %s: op %d (%u) failed: %s\n", v->name, op, r,
			       img_last_error());
			ok = false;
		}
	}
	if (ok)
		ok = img_flush(img) == 0 &&
		     qt_compare(img, m.cur, 0, m.size, "live") &&
		     verify_snapshots(mem, &m, true, v->name);
	if (ok) {
		struct img_check res;

		ok = qt_check(img, &res, v->name) == 0 && !res.corruptions &&
		     !res.leaks;
	}
	if (ok && v->qemu_check && qt_have_qemu_img()) {
		char path[512];

		snprintf(path, sizeof(path), "%s/model.qcow2", test_tmpdir());
		ok = qt_save_mem(mem, path) == 0 && qt_qemu_check(path) == 0;
	}
	/* Deleting every snapshot gives back everything they held. */
	for (int i = 0; ok && i < MAX_SNAPS; i++)
		if (m.sn[i].data)
			ok = img_snapshot_delete(img, m.sn[i].name) == 0;
	if (ok) {
		struct img_check res;

		ok = qt_check(img, &res, v->name) == 0 && !res.corruptions &&
		     !res.leaks && qt_compare(img, m.cur, 0, m.size, "end");
	}
out:
	img_close(img);
	img_io_close(mem);
	model_free(&m);
	free(buf);
	return ok;
}

/* ---- 100 snapshots ---- */

static void test_hundred(void)
{
	const uint64_t size = 1 << 20, cs = 4096;
	struct model m = { .size = size };
	struct img_snapshot_info *list = NULL;
	struct img_io *mem = NULL;
	struct img *img = NULL;
	uint8_t *all[100] = { 0 };
	size_t n = 0;
	bool ok = true;

	m.cur = calloc(1, size);
	if (!m.cur ||
	    qt_create_mem("cluster_size=4096", size, NULL, NULL, &mem) < 0 ||
	    qt_open_borrowed(mem, 0, &img) < 0) {
		CHECK(0);
		goto out;
	}
	for (int i = 0; i < 100 && ok; i++) {
		char name[32];

		memset(m.cur + (uint64_t)i * 2 * cs, i + 1, cs);
		snprintf(name, sizeof(name), "snap-%d", i);
		ok = img_write(img, m.cur + (uint64_t)i * 2 * cs,
			       (uint64_t)i * 2 * cs, cs, 0) == 0 &&
		     img_snapshot_create(img, name) == 0;
		all[i] = malloc(size);
		if (!all[i])
			break;
		memcpy(all[i], m.cur, size);
	}
	CHECK(ok);
	CHECK_OK(img_snapshot_list(img, &list, &n));
	CHECK_EQ(n, 100);
	for (size_t i = 0; i < n && i < 100; i++) {
		char id[16], name[32];

		snprintf(id, sizeof(id), "%zu", i + 1);
		snprintf(name, sizeof(name), "snap-%zu", i);
		CHECK(!strcmp(list[i].id, id) && !strcmp(list[i].name, name));
		CHECK_EQ(list[i].disk_size, size);
	}
	img_snapshot_list_free(list, n);
	CHECK_OK(img_flush(img));
	for (int i = 0; i < 100 && all[i]; i += 7) {
		struct img *v;
		char id[16];

		snprintf(id, sizeof(id), "%d", i + 1);
		CHECK_OK(open_view(mem, id, IMG_OPEN_RDONLY, &v));
		if (v)
			CHECK(qt_compare(v, all[i], 0, size, id));
		img_close(v);
	}
	/* Delete every other one, then apply an old one and check. */
	for (int i = 0; i < 100; i += 2) {
		char name[32];

		snprintf(name, sizeof(name), "snap-%d", i);
		CHECK_OK(img_snapshot_delete(img, name));
	}
	CHECK_OK(img_snapshot_apply(img, "snap-13"));
	if (all[13])
		CHECK(qt_compare(img, all[13], 0, size, "applied snap-13"));
	{
		struct img_check res;

		CHECK_OK(qt_check(img, &res, "100 snapshots"));
		CHECK_EQ(res.corruptions + res.leaks, 0);
	}
	if (qt_have_qemu_img()) {
		char path[512];

		snprintf(path, sizeof(path), "%s/hundred.qcow2", test_tmpdir());
		CHECK_OK(img_flush(img));
		CHECK_OK(qt_save_mem(mem, path));
		CHECK_EQ(qt_qemu_check(path), 0);
	}
out:
	img_close(img);
	img_io_close(mem);
	for (int i = 0; i < 100; i++)
		free(all[i]);
	model_free(&m);
	printf("%s - 100 snapshots\n", ok ? "ok" : "not ok");
}

/* ---- crash replay and fault injection ---- */

#define CR_SIZE (256ull << 10)
#define CR_CS 4096ull

static void count_errors(void *opaque, const char *line)
{
	/* Leaks and COPIED flags are allowed after a crash; nothing else. */
	if (!strncmp(line, "ERROR", 5) && !strstr(line, "OFLAG_COPIED"))
		++*(unsigned *)opaque;
}

/* The states an interrupted operation may leave: live contents before or
 * after it, and the snapshots of the model (before or after). */
struct expect {
	const uint8_t *before, *after;
	const struct model *m;
};

static bool verify_crashed(struct img_io *mem, const struct expect *e,
			   const char *what)
{
	struct img_check res;
	struct img *img;
	unsigned errors = 0;
	uint8_t *buf = malloc(CR_SIZE);
	bool ok;

	if (!buf || open_view(mem, NULL, IMG_OPEN_RDONLY, &img) < 0) {
		printf("# %s: open failed: %s\n", what, img_last_error());
		free(buf);
		return false;
	}
	memset(&res, 0, sizeof(res));
	res.report = count_errors;
	res.opaque = &errors;
	ok = img_check(img, 0, &res) == 0 && errors == 0;
	if (!ok)
		printf("# %s: check found %u errors\n", what, errors);
	ok = ok && img_size(img) == CR_SIZE &&
	     img_read(img, buf, 0, CR_SIZE) == 0 &&
	     (!memcmp(buf, e->before, CR_SIZE) ||
	      !memcmp(buf, e->after, CR_SIZE));
	img_close(img);
	ok = ok && verify_snapshots(mem, e->m, false, what);
	/* Overwrite the live disk: no snapshot may change. */
	if (ok && open_view(mem, NULL, 0, &img) == 0) {
		memset(buf, 0xee, CR_SIZE);
		ok = img_write(img, buf, 0, CR_SIZE, 0) == 0 &&
		     img_close(img) == 0 &&
		     verify_snapshots(mem, e->m, false, what);
	} else {
		ok = false;
	}
	if (!ok)
		printf("# %s: bad state\n", what);
	free(buf);
	return ok;
}

/* A small image with three snapshots "a", "b", "c" and data. */
static int crash_setup(struct model *m, struct img_io **mem)
{
	struct img *img;
	int ret;

	m->size = CR_SIZE;
	m->cur = malloc(CR_SIZE);
	if (!m->cur)
		return -ENOMEM;
	ret = qt_create_mem("cluster_size=4096", CR_SIZE, NULL, NULL, mem);
	if (ret == 0)
		ret = qt_open_borrowed(*mem, 0, &img);
	if (ret < 0)
		return ret;
	for (int i = 0; i < 3 && ret == 0; i++) {
		for (uint64_t off = 0; off < CR_SIZE; off += CR_CS)
			memset(m->cur + off, (int)(off / CR_CS * 3 + i), CR_CS);
		ret = img_write(img, m->cur, 0, CR_SIZE / 2 + 4096 * i, 0);
		if (ret == 0)
			ret = img_read(img, m->cur, 0, CR_SIZE);
		snprintf(m->sn[i].name, sizeof(m->sn[i].name), "%c", 'a' + i);
		if (ret == 0)
			ret = img_snapshot_create(img, m->sn[i].name);
		m->sn[i].data = malloc(CR_SIZE);
		m->sn[i].size = CR_SIZE;
		if (!m->sn[i].data)
			ret = -ENOMEM;
		else
			memcpy(m->sn[i].data, m->cur, CR_SIZE);
	}
	if (ret == 0)
		ret = img_write(img, m->cur, CR_SIZE / 4, 3 * CR_CS, 0);
	if (ret == 0)
		ret = img_read(img, m->cur, 0, CR_SIZE);
	img_close(img);
	return ret;
}

enum sn_op { OP_CREATE, OP_APPLY, OP_DELETE };
static const char *const op_names[] = { "create", "apply", "delete" };

static int do_op(struct img *img, enum sn_op op)
{
	switch (op) {
	case OP_CREATE:
		return img_snapshot_create(img, "new");
	case OP_APPLY:
		return img_snapshot_apply(img, "b");
	default:
		return img_snapshot_delete(img, "b");
	}
}

/* Model after op (m: before, with room for "new" in slot 3). */
static void model_after(const struct model *m, enum sn_op op, uint8_t *after)
{
	memcpy(after, op == OP_APPLY ? m->sn[1].data : m->cur, CR_SIZE);
}

static void test_crash(enum sn_op op)
{
	struct model m = { 0 };
	struct img_io *mem = NULL, *b = NULL, *faulty = NULL;
	const struct img_io_log_entry *log;
	uint8_t *init = NULL, *after = malloc(CR_SIZE);
	const uint8_t *data;
	size_t n_log, len;
	struct img *img = NULL;
	unsigned bad = 0, n_reordered = 0;
	int ret;

	ret = crash_setup(&m, &mem);
	if (ret == 0 && after) {
		img_io_mem_data(mem, &data, &len);
		init = malloc(len);
		if (init)
			memcpy(init, data, len);
	}
	if (ret < 0 || !init || qt_io_borrow(mem, &b) < 0 ||
	    img_io_faulty_new(b, &faulty) < 0 ||
	    qt_open_borrowed(faulty, 0, &img) < 0) {
		CHECK(0);
		goto out;
	}
	CHECK_OK(do_op(img, op));
	CHECK_OK(img_close(img));
	img = NULL;
	model_after(&m, op, after);
	/* "new" (create) holds the live contents; a deleted "b" may still
	 * be listed, with its contents. */
	if (op == OP_CREATE) {
		snprintf(m.sn[3].name, sizeof(m.sn[3].name), "new");
		m.sn[3].size = CR_SIZE;
		m.sn[3].data = malloc(CR_SIZE);
		if (m.sn[3].data)
			memcpy(m.sn[3].data, m.cur, CR_SIZE);
	}
	img_io_faulty_log(faulty, &log, &n_log);
	for (size_t k = 0; k <= n_log && bad < 5; k++) {
		struct img_io *r;
		struct expect e = { m.cur, after, &m };
		char what[64];

		snprintf(what, sizeof(what), "%s crash after %zu/%zu",
			 op_names[op], k, n_log);
		if (img_io_mem_new(init, len, &r) < 0 ||
		    img_io_log_apply(r, log, k) < 0) {
			bad++;
			continue;
		}
		bad += !verify_crashed(r, &e, what);
		img_io_close(r);
	}
	/* The disk may reorder the writes between two flushes: replay each
	 * prefix that ends at a flush plus shuffled subsets of the writes
	 * up to the next one. */
	for (size_t h = 0; h < n_log && bad < 5; h++) {
		struct qt_rng rng = { 0x5eed + h };
		size_t idx[64], nw = 0, end;

		if (h > 0 && log[h - 1].kind != IMG_LOG_FLUSH)
			continue;
		for (end = h; end < n_log && log[end].kind != IMG_LOG_FLUSH &&
			      nw < IMG_ARRAY_SIZE(idx);
		     end++)
			if (log[end].kind == IMG_LOG_WRITE ||
			    log[end].kind == IMG_LOG_ZERO)
				idx[nw++] = end;
		for (int trial = 0; nw >= 2 && trial < 8 && bad < 5; trial++) {
			struct expect e = { m.cur, after, &m };
			size_t keep = 1 + qt_below(&rng, nw);
			struct img_io *r;
			char what[80];
			int rc;

			for (size_t i = nw - 1; i > 0; i--) {
				size_t j = qt_below(&rng, i + 1), tmp = idx[i];

				idx[i] = idx[j];
				idx[j] = tmp;
			}
			snprintf(what, sizeof(what),
				 "%s: %zu of %zu reordered writes after %zu",
				 op_names[op], keep, nw, h);
			if (img_io_mem_new(init, len, &r) < 0) {
				bad++;
				break;
			}
			rc = img_io_log_apply(r, log, h);
			for (size_t i = 0; i < keep && rc >= 0; i++)
				rc = img_io_log_apply(r, &log[idx[i]], 1);
			bad += rc < 0 || !verify_crashed(r, &e, what);
			img_io_close(r);
			n_reordered++;
		}
	}
	CHECK_EQ(bad, 0);
	printf("%s - crash replay of snapshot %s: %zu prefixes, %u reordered\n",
	       bad ? "not ok" : "ok", op_names[op], n_log + 1, n_reordered);
out:
	img_close(img);
	img_io_close(faulty);
	img_io_close(mem);
	model_free(&m);
	free(init);
	free(after);
}

/* After a single failed op the image stays in use: overwrite the whole live
 * disk, close; no snapshot may change and check finds nothing but leaks
 * (and COPIED flags). */
static bool overwrite_and_verify(struct img *img, struct img_io *mem,
				 const struct model *m, const char *what)
{
	uint8_t *buf = malloc(CR_SIZE), *back = malloc(CR_SIZE);
	struct img_check res;
	unsigned errors = 0;
	bool ok;

	ok = buf && back;
	if (ok) {
		memset(buf, 0xee, CR_SIZE);
		ok = img_resize(img, CR_SIZE, IMG_RESIZE_SHRINK,
				IMG_PREALLOC_OFF) == 0 &&
		     img_write(img, buf, 0, CR_SIZE, 0) == 0;
	}
	ok = img_close(img) == 0 && ok;
	if (ok && open_view(mem, NULL, IMG_OPEN_RDONLY, &img) == 0) {
		memset(&res, 0, sizeof(res));
		res.report = count_errors;
		res.opaque = &errors;
		ok = img_check(img, 0, &res) == 0 && errors == 0 &&
		     img_read(img, back, 0, CR_SIZE) == 0 &&
		     !memcmp(buf, back, CR_SIZE);
		img_close(img);
		ok = ok && verify_snapshots(mem, m, false, what);
	} else {
		ok = false;
	}
	if (!ok)
		printf("# %s: bad state after overwriting: %s\n", what,
		       img_last_error());
	free(buf);
	free(back);
	return ok;
}

static void test_faults(enum sn_op op)
{
	struct model m = { 0 };
	struct img_io *mem = NULL;
	uint8_t *init = NULL, *after = malloc(CR_SIZE);
	const uint8_t *data;
	size_t len = 0;
	unsigned bad = 0, runs = 0;
	int ret;

	ret = crash_setup(&m, &mem);
	if (ret == 0 && after) {
		img_io_mem_data(mem, &data, &len);
		init = malloc(len);
		if (init)
			memcpy(init, data, len);
	}
	if (ret < 0 || !init) {
		CHECK(0);
		goto out;
	}
	model_after(&m, op, after);
	if (op == OP_CREATE) {
		snprintf(m.sn[3].name, sizeof(m.sn[3].name), "new");
		m.sn[3].size = CR_SIZE;
		m.sn[3].data = malloc(CR_SIZE);
		if (m.sn[3].data)
			memcpy(m.sn[3].data, m.cur, CR_SIZE);
	}
	for (uint64_t at = 1; at < 100000 && bad < 5; at++) {
		struct img_io *r, *b, *faulty;
		struct expect e = { m.cur, after, &m };
		bool sticky = at % 2;
		uint64_t fail_at;
		struct img *img;
		char what[64];
		int op_ret;

		snprintf(what, sizeof(what), "%s %s fault at op %" PRIu64,
			 op_names[op], sticky ? "sticky" : "single", at / 2);
		if (img_io_mem_new(init, len, &r) < 0 ||
		    qt_io_borrow(r, &b) < 0 ||
		    img_io_faulty_new(b, &faulty) < 0 ||
		    qt_open_borrowed(faulty, 0, &img) < 0) {
			bad++;
			break;
		}
		fail_at = img_io_faulty_ops(faulty) + at / 2;
		img_io_faulty_arm(faulty, fail_at, EIO, sticky);
		op_ret = do_op(img, op);
		/* A fault past the op's I/O is not this test's business. */
		if (img_io_faulty_ops(faulty) < fail_at)
			img_io_faulty_arm(faulty, 0, 0, false);
		if (op_ret < 0 && !*img_last_error()) {
			printf("# %s: error without a message\n", what);
			bad++;
		}
		if (!sticky)
			bad += !overwrite_and_verify(img, r, &m, what);
		else
			img_close(img);
		img_io_close(faulty);
		runs++;
		if (sticky)
			bad += !verify_crashed(r, &e, what);
		img_io_close(r);
		if (op_ret == 0 && sticky)
			break;
	}
	CHECK_EQ(bad, 0);
	printf("%s - fault injection in snapshot %s: %u runs\n",
	       bad ? "not ok" : "ok", op_names[op], runs);
out:
	img_io_close(mem);
	model_free(&m);
	free(init);
	free(after);
}

int main(void)
{
	struct qt_rng rng = { qt_seed(0x5a4e) };

	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");
	for (size_t i = 0; i < IMG_ARRAY_SIZE(variants); i++) {
		bool ok = run_model(&variants[i], &rng);

		CHECK(ok);
		printf("%s - model: %s\n", ok ? "ok" : "not ok",
		       variants[i].name);
	}
	test_hundred();
	for (int op = OP_CREATE; op <= OP_DELETE; op++) {
		test_crash(op);
		test_faults(op);
	}
	return test_done();
}
