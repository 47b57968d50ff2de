/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the small core modules: option strings (qemu-img -o syntax),
 * size strings, the typed option getters, the last-error buffer, img_is_zero
 * and relative path resolution.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "img-driver.h"
#include "tap.h"

static void test_kv(void)
{
	struct img_kv *kv = NULL;
	size_t n = 0;

	CHECK_OK(img_kv_parse("a=1,b=x,,y,c=", &kv, &n));
	CHECK_EQ(n, 3);
	if (n == 3) {
		CHECK(!strcmp(kv[0].key, "a") && !strcmp(kv[0].value, "1"));
		CHECK(!strcmp(kv[1].key, "b") && !strcmp(kv[1].value, "x,y"));
		CHECK(!strcmp(kv[2].key, "c") && !strcmp(kv[2].value, ""));
	}
	/* Appends to what is there. */
	CHECK_OK(img_kv_parse("help", &kv, &n));
	CHECK_EQ(n, 4);
	if (n == 4)
		CHECK(!strcmp(kv[3].key, "help") && kv[3].value);
	CHECK_OK(img_kv_parse("", &kv, &n));
	CHECK_EQ(n, 4);
	CHECK_OK(img_kv_parse("d=1,", &kv, &n));
	CHECK_EQ(n, 5);
	CHECK_OK(img_kv_parse("e=a=b,,,,", &kv, &n));
	CHECK_EQ(n, 6);
	if (n == 6)
		CHECK(!strcmp(kv[5].value, "a=b,,"));
	CHECK_ERR(img_kv_parse("=1", &kv, &n), -EINVAL);
	CHECK_ERR(img_kv_parse("x=1,,,=2", &kv, &n), -EINVAL);
	img_kv_free(kv, n);
	img_kv_free(NULL, 0);
}

static void test_sizes(void)
{
	static const struct {
		const char *s;
		uint64_t v;
	} good[] = {
		{ "0", 0 },
		{ "512", 512 },
		{ "1b", 1 },
		{ "1B", 1 },
		{ "64k", 65536 },
		{ "64K", 65536 },
		{ "1M", 1 << 20 },
		{ "2G", 2ull << 30 },
		{ "1T", 1ull << 40 },
		{ "1P", 1ull << 50 },
		{ "1E", 1ull << 60 },
		{ "15E", 15ull << 60 },
		{ "1.5k", 1536 },
		{ "0.5k", 512 },
		{ "1.0", 1 },
		{ "1.k", 1024 },
		{ "0x1000", 4096 },
		{ "0x10k", 16384 },
		{ "18446744073709551615", UINT64_MAX },
	};
	static const char *const bad[] = {
		"",	  "-1",	 "k",	"1kb", "1.5", "1x",
		".5k",	  "0x",	 "16E", "1 k", " 1",  "18446744073709551616",
		"1.5.5k", "abc",
	};
	uint64_t v;

	for (size_t i = 0; i < IMG_ARRAY_SIZE(good); i++) {
		v = 12345;
		CHECK_OK(img_parse_size(good[i].s, &v));
		if (v != good[i].v)
			fprintf(stderr, "size '%s': %" PRIu64 "\n", good[i].s,
				v);
		CHECK(v == good[i].v);
	}
	for (size_t i = 0; i < IMG_ARRAY_SIZE(bad); i++) {
		v = 12345;
		int r = img_parse_size(bad[i], &v);
		if (r != -EINVAL)
			fprintf(stderr, "size '%s' accepted\n", bad[i]);
		CHECK(r == -EINVAL);
		CHECK(v == 12345);
		CHECK(img_last_error()[0]);
	}
	CHECK_ERR(img_parse_size(NULL, &v), -EINVAL);
}

static void test_opts(void)
{
	struct img_kv kv[] = {
		{ "cluster_size", "64k" },
		{ "lazy_refcounts", "on" },
		{ "compat", "1.1" },
		{ "n", "42" },
		{ "bad_size", "12q" },
		{ "bad_bool", "maybe" },
		{ "n2", "-3" },
		{ "preallocation", "falloc" },
		{ "compat", "0.10" },
	};
	struct img_create_opts o = { .format = "raw",
				     .opts = kv,
				     .n_opts = IMG_ARRAY_SIZE(kv) };
	struct img_create_opts none = { .format = "raw" };
	enum img_prealloc pa = IMG_PREALLOC_OFF;
	const char *s = NULL;
	uint64_t u = 0;
	bool b = false;

	CHECK_EQ(img_opt_size(&o, "cluster_size", &u), 1);
	CHECK_EQ(u, 65536);
	CHECK_EQ(img_opt_bool(&o, "lazy_refcounts", &b), 1);
	CHECK(b);
	/* The last one wins. */
	CHECK_EQ(img_opt_str(&o, "compat", &s), 1);
	CHECK(s && !strcmp(s, "0.10"));
	CHECK_EQ(img_opt_u64(&o, "n", &u), 1);
	CHECK_EQ(u, 42);
	u = 7;
	CHECK_EQ(img_opt_u64(&o, "absent", &u), 0);
	CHECK_EQ(u, 7);
	CHECK_EQ(img_opt_size(&none, "cluster_size", &u), 0);
	CHECK_ERR(img_opt_size(&o, "bad_size", &u), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "bad_size");
	CHECK_ERR(img_opt_bool(&o, "bad_bool", &b), -EINVAL);
	CHECK_STR_HAS(img_last_error(), "maybe");
	CHECK_ERR(img_opt_u64(&o, "n2", &u), -EINVAL);
	{
		struct img_kv nums[] = { { "a", "010" },
					 { "b", "0x1F" },
					 { "c", "18446744073709551615" },
					 { "d", "18446744073709551616" },
					 { "e", "0x" },
					 { "f", " 1" },
					 { "g", "" } };
		struct img_create_opts on = { .opts = nums, .n_opts = 7 };

		CHECK_EQ(img_opt_u64(&on, "a", &u), 1);
		CHECK_EQ(u, 10);
		CHECK_EQ(img_opt_u64(&on, "b", &u), 1);
		CHECK_EQ(u, 31);
		CHECK_EQ(img_opt_u64(&on, "c", &u), 1);
		CHECK(u == UINT64_MAX);
		CHECK_ERR(img_opt_u64(&on, "d", &u), -EINVAL);
		CHECK_ERR(img_opt_u64(&on, "e", &u), -EINVAL);
		CHECK_ERR(img_opt_u64(&on, "f", &u), -EINVAL);
		CHECK_ERR(img_opt_u64(&on, "g", &u), -EINVAL);
	}
	CHECK_EQ(img_opt_prealloc(&o, &pa), 1);
	CHECK_EQ(pa, IMG_PREALLOC_FALLOC);

	static const char *const names[] = { "off", "metadata", "falloc",
					     "full" };
	for (int i = 0; i < 4; i++) {
		struct img_kv one = { "preallocation", names[i] };
		struct img_create_opts oo = { .opts = &one, .n_opts = 1 };

		CHECK_EQ(img_opt_prealloc(&oo, &pa), 1);
		CHECK_EQ(pa, i);
	}
	struct img_kv badp = { "preallocation", "some" };
	struct img_create_opts ob = { .opts = &badp, .n_opts = 1 };
	CHECK_ERR(img_opt_prealloc(&ob, &pa), -EINVAL);

	static const char *const yes[] = { "on", "true", "yes" };
	static const char *const no[] = { "off", "false", "no" };
	for (int i = 0; i < 3; i++) {
		struct img_kv y = { "x", yes[i] }, nn = { "x", no[i] };
		struct img_create_opts oy = { .opts = &y, .n_opts = 1 };
		struct img_create_opts on = { .opts = &nn, .n_opts = 1 };

		b = false;
		CHECK_EQ(img_opt_bool(&oy, "x", &b), 1);
		CHECK(b);
		CHECK_EQ(img_opt_bool(&on, "x", &b), 1);
		CHECK(!b);
	}
}

static void *error_thread(void *arg)
{
	img_error(-EIO, "thread message");
	return (void *)(strcmp(img_last_error(), "thread message") == 0 ? arg :
									  NULL);
}

static void test_errors(void)
{
	static int marker;
	pthread_t t;
	void *res = NULL;

	img_clear_error();
	CHECK(img_last_error() && !img_last_error()[0]);
	CHECK_EQ(img_error(-EINVAL, "x: value %d", 42), -EINVAL);
	CHECK(!strcmp(img_last_error(), "x: value 42"));
	/* A message may quote the previous one. */
	img_error(-ENOENT, "outer: %s", img_last_error());
	CHECK(!strcmp(img_last_error(), "outer: x: value 42"));
	/* Thread-local: another thread's error does not show here. */
	CHECK(pthread_create(&t, NULL, error_thread, &marker) == 0);
	pthread_join(t, &res);
	CHECK(res == &marker);
	CHECK(!strcmp(img_last_error(), "outer: x: value 42"));
	img_clear_error();
	CHECK(!img_last_error()[0]);
}

static void test_is_zero(void)
{
	static uint8_t buf[70000];

	CHECK(img_is_zero(buf, 0));
	CHECK(img_is_zero(buf, 1));
	CHECK(img_is_zero(buf, 15));
	CHECK(img_is_zero(buf, 16));
	CHECK(img_is_zero(buf, 17));
	CHECK(img_is_zero(buf, sizeof(buf)));
	for (size_t pos = 0; pos < sizeof(buf); pos += 997) {
		buf[pos] = 1;
		CHECK(!img_is_zero(buf, sizeof(buf)));
		CHECK(img_is_zero(buf, pos));
		buf[pos] = 0;
	}
	buf[sizeof(buf) - 1] = 0x80;
	CHECK(!img_is_zero(buf, sizeof(buf)));
	CHECK(img_is_zero(buf, sizeof(buf) - 1));
	buf[sizeof(buf) - 1] = 0;
	buf[20] = 1;
	CHECK(!img_is_zero(buf, 21));
	CHECK(img_is_zero(buf, 20));
}

static void test_paths(void)
{
	static const struct {
		const char *base, *name, *want;
	} cases[] = {
		{ "/a/b/top.qcow2", "base.raw", "/a/b/base.raw" },
		{ "/a/b/top.qcow2", "/x/base.raw", "/x/base.raw" },
		{ "/a/b/top.qcow2", "../c/base", "/a/b/../c/base" },
		{ "top.qcow2", "base.raw", "base.raw" },
		{ "dir/top.qcow2", "base.raw", "dir/base.raw" },
		{ "/top", "base", "/base" },
		{ NULL, "base", "base" },
	};
	char *out;

	for (size_t i = 0; i < IMG_ARRAY_SIZE(cases); i++) {
		out = NULL;
		CHECK_OK(img_path_relative(cases[i].base, cases[i].name, &out));
		CHECK(out && !strcmp(out, cases[i].want));
		free(out);
	}
	CHECK_ERR(img_path_relative("/a/b", "", &out), -EINVAL);
}

int main(void)
{
	test_kv();
	test_sizes();
	test_opts();
	test_errors();
	test_is_zero();
	test_paths();
	return test_done();
}
