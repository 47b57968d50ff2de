/* SPDX-License-Identifier: MIT */
/*
 * The metadata table cache: a bounded set of fixed-size tables (qcow2 L2
 * tables and refcount blocks, BAT pages) read from and written back to a host
 * file. Lookup is a hash on the host offset; a miss evicts the least recently
 * used unpinned table, writing it first if dirty. Crash safety comes from the
 * dependency: before any dirty table of a cache is written, the tables of its
 * dependency are written and that file flushed (once, and only if the
 * dependency was dirtied since its last such flush), so an L2 entry never
 * reaches the disk before the refcount that accounts for its cluster.
 * Tables live in 4 KiB-aligned slabs so O_DIRECT files need no bounce. When
 * every table is pinned the cache grows by a slab (up to a bound) rather than
 * block. Not thread-safe: the caller serialises.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CACHE_ALIGN 4096
#define CACHE_MAX_SLABS 8

struct cache_entry {
	uint64_t file_off;
	uint8_t *table;
	uint64_t lru; /* clock at the last get; smallest is evicted first */
	unsigned pins;
	int hnext; /* next entry in the hash chain, -1 at the end */
	bool valid; /* holds the table at file_off */
	bool dirty;
};

struct cache_slab {
	uint8_t *base;
	unsigned first; /* index of its first entry */
	unsigned count;
};

struct img_cache {
	struct img_io *io;
	uint64_t table_size;
	unsigned n; /* entries asked for */
	unsigned n_entries; /* entries now (more when all were pinned) */
	unsigned n_dirty;
	struct cache_entry *e;
	int *hash;
	unsigned hash_bits;
	struct cache_slab slabs[CACHE_MAX_SLABS];
	unsigned n_slabs;
	uint64_t clock;
	struct img_cache *dep;
	bool unflushed; /* dirtied since a dependent cache last flushed us */
	bool busy; /* writing back: breaks dependency cycles */
};

static unsigned cache_hash(const struct img_cache *c, uint64_t file_off)
{
	return (unsigned)((file_off * 0x9e3779b97f4a7c15ull) >>
			  (64 - c->hash_bits));
}

static int cache_lookup(const struct img_cache *c, uint64_t file_off)
{
	for (int i = c->hash[cache_hash(c, file_off)]; i >= 0;
	     i = c->e[i].hnext)
		if (c->e[i].file_off == file_off)
			return i;
	return -1;
}

static void cache_hash_insert(struct img_cache *c, int i)
{
	unsigned h = cache_hash(c, c->e[i].file_off);

	c->e[i].hnext = c->hash[h];
	c->hash[h] = i;
}

static void cache_hash_remove(struct img_cache *c, int i)
{
	int *p = &c->hash[cache_hash(c, c->e[i].file_off)];

	while (*p >= 0 && *p != i)
		p = &c->e[*p].hnext;
	if (*p == i)
		*p = c->e[i].hnext;
	c->e[i].hnext = -1;
}

/* Resize the hash to suit n_entries and re-insert every valid entry. */
static int cache_rehash(struct img_cache *c)
{
	unsigned bits = 1;
	int *hash;

	while ((1u << bits) < 2 * c->n_entries)
		bits++;
	hash = malloc(sizeof(*hash) << bits);
	if (!hash)
		return -ENOMEM;
	free(c->hash);
	c->hash = hash;
	c->hash_bits = bits;
	for (unsigned i = 0; i < (1u << bits); i++)
		hash[i] = -1;
	for (unsigned i = 0; i < c->n_entries; i++)
		if (c->e[i].valid)
			cache_hash_insert(c, (int)i);
	return 0;
}

/* Add count entries in a new slab. */
static int cache_add_slab(struct img_cache *c, unsigned count)
{
	struct cache_slab *s = &c->slabs[c->n_slabs];
	struct cache_entry *e;
	void *base = NULL;
	unsigned total = c->n_entries + count;

	if (c->n_slabs == CACHE_MAX_SLABS)
		return -ENOMEM;
	if (posix_memalign(&base, CACHE_ALIGN, c->table_size * count))
		return -ENOMEM;
	e = realloc(c->e, sizeof(*e) * total);
	if (!e) {
		free(base);
		return -ENOMEM;
	}
	c->e = e;
	for (unsigned i = 0; i < count; i++)
		e[c->n_entries + i] = (struct cache_entry){
			.table = (uint8_t *)base + c->table_size * i,
			.hnext = -1,
		};
	s->base = base;
	s->first = c->n_entries;
	s->count = count;
	c->n_slabs++;
	c->n_entries = total;
	return cache_rehash(c);
}

int img_cache_new(struct img_io *io, uint64_t table_size, unsigned n,
		  struct img_cache **out)
{
	struct img_cache *c;
	int ret;

	if (!table_size || !n || table_size > (64u << 20) || n > (1u << 24) ||
	    table_size * n > (16ull << 30))
		return img_error(-EINVAL,
				 "cache: cannot cache %u tables of %" PRIu64
				 " bytes",
				 n, table_size);
	c = calloc(1, sizeof(*c));
	if (!c)
		return img_error(-ENOMEM, "cache: out of memory");
	c->io = io;
	c->table_size = table_size;
	c->n = n;
	ret = cache_add_slab(c, n);
	if (ret < 0) {
		img_cache_free(c);
		return img_error(
			ret,
			"cache: out of memory for %u tables of %" PRIu64
			" bytes",
			n, table_size);
	}
	*out = c;
	return 0;
}

/* Dirty tables are dropped: callers write back first. */
void img_cache_free(struct img_cache *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->n_slabs; i++)
		free(c->slabs[i].base);
	free(c->e);
	free(c->hash);
	free(c);
}

static struct cache_entry *cache_entry_of(struct img_cache *c, void *table)
{
	uint8_t *p = table;

	for (unsigned i = 0; i < c->n_slabs; i++) {
		struct cache_slab *s = &c->slabs[i];
		uint64_t idx;

		if (p < s->base || p >= s->base + c->table_size * s->count)
			continue;
		idx = (uint64_t)(p - s->base) / c->table_size;
		assert(s->base + idx * c->table_size == p);
		return &c->e[s->first + idx];
	}
	assert(!"table does not belong to this cache");
	return NULL;
}

/* Before a dirty table of c is written: the dependency's tables are
 * written and its file flushed, if it changed since it was last flushed. */
static int cache_flush_dep(struct img_cache *c)
{
	struct img_cache *dep = c->dep;
	int ret;

	if (!dep || !dep->unflushed || dep->busy)
		return 0;
	ret = img_cache_write_back(dep);
	if (ret < 0)
		return ret;
	ret = img_io_flush(dep->io);
	if (ret < 0)
		return ret;
	dep->unflushed = false;
	return 0;
}

static int cache_write_entry(struct img_cache *c, struct cache_entry *e)
{
	int ret;

	c->busy = true;
	ret = cache_flush_dep(c);
	c->busy = false;
	if (ret < 0)
		return ret;
	ret = img_io_pwrite(c->io, e->table, c->table_size, e->file_off);
	if (ret < 0)
		return ret;
	e->dirty = false;
	c->n_dirty--;
	return 0;
}

/* An entry to load a new table into: a free one, else the least recently
 * used unpinned one (written back first if dirty), else a new slab. */
static int cache_victim(struct img_cache *c, struct cache_entry **out)
{
	struct cache_entry *v = NULL;
	unsigned grow;
	int ret;

	for (unsigned i = 0; i < c->n_entries; i++) {
		struct cache_entry *e = &c->e[i];

		if (e->pins)
			continue;
		if (!e->valid) {
			v = e;
			break;
		}
		if (!v || e->lru < v->lru)
			v = e;
	}
	if (!v) {
		grow = c->n < 16 ? 16 : c->n;
		ret = cache_add_slab(c, grow);
		if (ret < 0)
			return img_error(-ENOMEM,
					 "cache: all %u tables of %" PRIu64
					 " bytes are in use",
					 c->n_entries, c->table_size);
		v = &c->e[c->n_entries - grow];
	}
	if (v->valid) {
		if (v->dirty) {
			ret = cache_write_entry(c, v);
			if (ret < 0)
				return ret;
		}
		cache_hash_remove(c, (int)(v - c->e));
		v->valid = false;
	}
	*out = v;
	return 0;
}

static int cache_get(struct img_cache *c, uint64_t file_off, void **table,
		     bool read)
{
	struct cache_entry *e = NULL;
	int i = cache_lookup(c, file_off), ret;

	if (i >= 0) {
		e = &c->e[i];
		if (!read)
			memset(e->table, 0, c->table_size);
	} else {
		ret = cache_victim(c, &e);
		if (ret < 0)
			return ret;
		if (read) {
			ret = img_io_pread(c->io, e->table, c->table_size,
					   file_off);
			if (ret < 0)
				return ret;
		} else {
			memset(e->table, 0, c->table_size);
		}
		e->file_off = file_off;
		e->valid = true;
		e->dirty = false;
		cache_hash_insert(c, (int)(e - c->e));
	}
	e->pins++;
	e->lru = ++c->clock;
	*table = e->table;
	return 0;
}

int img_cache_get(struct img_cache *c, uint64_t file_off, void **table)
{
	return cache_get(c, file_off, table, true);
}

int img_cache_get_empty(struct img_cache *c, uint64_t file_off, void **table)
{
	return cache_get(c, file_off, table, false);
}

void img_cache_put(struct img_cache *c, void *table)
{
	struct cache_entry *e = cache_entry_of(c, table);

	assert(e && e->pins > 0);
	if (e && e->pins)
		e->pins--;
}

void img_cache_mark_dirty(struct img_cache *c, void *table)
{
	struct cache_entry *e = cache_entry_of(c, table);

	/* A table forgotten while pinned is no longer the file's. */
	if (!e || !e->valid)
		return;
	if (!e->dirty) {
		e->dirty = true;
		c->n_dirty++;
	}
	c->unflushed = true;
}

void img_cache_set_dependency(struct img_cache *c, struct img_cache *dep)
{
	for (struct img_cache *d = dep; d; d = d->dep)
		assert(d != c && "cache dependency cycle");
	c->dep = dep;
}

static int cache_cmp_off(const void *a, const void *b)
{
	const struct img_io_vec *x = a, *y = b;

	return x->file_off < y->file_off ? -1 : x->file_off > y->file_off;
}

int img_cache_write_back(struct img_cache *c)
{
	struct img_io_vec *v;
	unsigned k = 0;
	int ret;

	if (!c->n_dirty || c->busy)
		return 0;
	c->busy = true;
	ret = cache_flush_dep(c);
	c->busy = false;
	if (ret < 0)
		return ret;
	v = malloc(sizeof(*v) * c->n_dirty);
	if (!v) {
		for (unsigned i = 0; i < c->n_entries && ret >= 0; i++)
			if (c->e[i].valid && c->e[i].dirty)
				ret = cache_write_entry(c, &c->e[i]);
		return ret;
	}
	for (unsigned i = 0; i < c->n_entries; i++) {
		struct cache_entry *e = &c->e[i];

		if (e->valid && e->dirty)
			v[k++] = (struct img_io_vec){ e->table, c->table_size,
						      e->file_off, true };
	}
	qsort(v, k, sizeof(*v), cache_cmp_off);
	ret = img_io_submit(c->io, v, k);
	free(v);
	if (ret < 0)
		return ret; /* all stay dirty: rewriting them is harmless */
	for (unsigned i = 0; i < c->n_entries; i++)
		c->e[i].dirty = false;
	c->n_dirty = 0;
	return 0;
}

void img_cache_forget(struct img_cache *c, uint64_t file_off)
{
	int i = cache_lookup(c, file_off);
	struct cache_entry *e;

	if (i < 0)
		return;
	e = &c->e[i];
	cache_hash_remove(c, i);
	e->valid = false;
	if (e->dirty) {
		e->dirty = false;
		c->n_dirty--;
	}
}
