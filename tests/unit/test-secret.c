/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the core guard of lib/secret.c: /proc/self/coredump_filter
 * is 0 exactly while a holder exists (an explicit acquire, a secret, a keyed
 * sector cipher) and goes back to the value it had, a custom one included,
 * when the last holder goes. Also notes what an acquire/release pair costs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img-driver.h"
#include "tap.h"

#define FILTER "/proc/self/coredump_filter"

static unsigned long filter(void)
{
	FILE *f = fopen(FILTER, "r");
	unsigned long v = ~0ul;

	if (!f || fscanf(f, "%lx", &v) != 1)
		v = ~0ul;
	if (f)
		fclose(f);
	return v;
}

static int set_filter(unsigned long v)
{
	FILE *f = fopen(FILTER, "w");
	int ok;

	if (!f)
		return -1;
	ok = fprintf(f, "%#lx", v) > 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static void test_holders(unsigned long before)
{
	static const uint8_t key[64] = { 1, 2, 3 };
	struct img_sector_cipher *c = NULL;
	struct img_secret *s = NULL;

	CHECK_OK(img_core_guard_acquire());
	CHECK_EQ(filter(), 0);
	CHECK_OK(img_core_guard_acquire());
	img_core_guard_release();
	CHECK_EQ(filter(), 0);
	img_core_guard_release();
	CHECK_EQ(filter(), before);
	/* An unbalanced release neither underflows nor changes the filter. */
	img_core_guard_release();
	CHECK_EQ(filter(), before);

	CHECK_OK(img_secret_new("pass", 4, &s));
	CHECK_EQ(filter(), 0);
	CHECK_OK(img_sector_cipher_new("aes", "xts-plain64", key, sizeof(key),
				       &c));
	img_secret_free(s);
	/* The cipher still holds its key schedules. */
	CHECK_EQ(filter(), 0);
	img_sector_cipher_free(c);
	CHECK_EQ(filter(), before);
}

static void note_cost(void)
{
	struct timespec a, b;
	int n = 2000;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < n; i++) {
		if (img_core_guard_acquire() < 0)
			break;
		img_core_guard_release();
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	test_note("core guard acquire+release (first and last holder): %.2f us",
		  ((double)(b.tv_sec - a.tv_sec) * 1e9 +
		   (double)(b.tv_nsec - a.tv_nsec)) /
			  n / 1e3);
}

int main(void)
{
	unsigned long orig = filter();

	if (orig == ~0ul)
		test_skip("no readable " FILTER);
	test_holders(orig);
	/* A filter the user chose comes back as it was. */
	if (set_filter(0x23) == 0) {
		test_holders(0x23);
		CHECK_OK(set_filter(orig));
	}
	note_cost();
	CHECK_EQ(filter(), orig);
	return test_done();
}
