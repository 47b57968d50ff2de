/* SPDX-License-Identifier: MIT */
/*
 * Header-only helpers for the unit tests: CHECK() and friends print the file,
 * line and failed expression and count failures without stopping the test;
 * test_done() turns the count into the exit code tests/run.sh expects (0 pass,
 * 1 fail, and 1 when no check ran at all: a test that checks nothing must not
 * pass); test_skip() exits 77 with a reason; test_tmpdir() makes a private
 * temporary directory that test_done() removes.
 */
#ifndef TAP_H
#define TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "img.h"

static int tap_failures;
static int tap_checks;
static char tap_dir[256];

#define CHECK(cond)                                                            \
	do {                                                                   \
		tap_checks++;                                                  \
		if (!(cond)) {                                                 \
			tap_failures++;                                        \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

/* Compare two integers, printing both values on failure. */
#define CHECK_EQ(a, b)                                                            \
	do {                                                                      \
		long long tap_a_ = (long long)(a), tap_b_ = (long long)(b);       \
		tap_checks++;                                                     \
		if (tap_a_ != tap_b_) {                                           \
			tap_failures++;                                           \
			fprintf(stderr,                                           \
				"%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, tap_a_, tap_b_);      \
		}                                                                 \
	} while (0)

/* Check that a libimg call returns >= 0, printing its error otherwise. */
#define CHECK_OK(expr)                                                     \
	do {                                                               \
		int tap_r_ = (expr);                                       \
		tap_checks++;                                              \
		if (tap_r_ < 0) {                                          \
			tap_failures++;                                    \
			fprintf(stderr, "%s:%d: %s failed: %d (%s): %s\n", \
				__FILE__, __LINE__, #expr, tap_r_,         \
				strerror(-tap_r_), img_last_error());      \
		}                                                          \
	} while (0)

/* Check that a call fails with the given -errno. */
#define CHECK_ERR(expr, err)                                              \
	do {                                                              \
		int tap_r_ = (expr);                                      \
		tap_checks++;                                             \
		if (tap_r_ != (err)) {                                    \
			tap_failures++;                                   \
			fprintf(stderr,                                   \
				"%s:%d: %s returned %d, expected %s\n",   \
				__FILE__, __LINE__, #expr, tap_r_, #err); \
		}                                                         \
	} while (0)

/* Check that s contains sub. */
#define CHECK_STR_HAS(s, sub)                                                  \
	do {                                                                   \
		const char *tap_s_ = (s);                                      \
		tap_checks++;                                                  \
		if (!tap_s_ || !strstr(tap_s_, (sub))) {                       \
			tap_failures++;                                        \
			fprintf(stderr, "%s:%d: '%s' does not contain '%s'\n", \
				__FILE__, __LINE__,                            \
				tap_s_ ? tap_s_ : "(null)", (sub));            \
		}                                                              \
	} while (0)

static inline void test_note(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline void test_note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* Exit 77 (skip) with the reason. */
static inline void test_skip(const char *why)
{
	printf("SKIP: %s\n", why);
	exit(77);
}

/* A fresh directory under $TMPDIR (or /tmp), removed by test_done(). */
static inline const char *test_tmpdir(void)
{
	const char *base = getenv("TMPDIR");

	if (tap_dir[0])
		return tap_dir;
	snprintf(tap_dir, sizeof(tap_dir), "%s/img-test-XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tap_dir)) {
		perror("mkdtemp");
		exit(1);
	}
	return tap_dir;
}

/* A path inside test_tmpdir(); returns a static buffer of 8 rotating slots. */
static inline const char *test_path(const char *name)
{
	static char bufs[8][512];
	static unsigned next;
	char *p = bufs[next++ % 8];

	snprintf(p, sizeof(bufs[0]), "%s/%s", test_tmpdir(), name);
	return p;
}

/* Run a shell command; returns its exit status (-1 if it did not run). */
static inline int test_sh(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline int test_sh(const char *fmt, ...)
{
	char cmd[16384];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static inline int test_done(void)
{
	if (tap_dir[0] && !getenv("TEST_KEEP_TMP")) {
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tap_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", tap_dir);
	}
	printf("%d checks, %d failed\n", tap_checks, tap_failures);
	if (tap_checks == 0) {
		fprintf(stderr, "test_done: no check ran: this test tests "
				"nothing\n");
		return 1;
	}
	return tap_failures ? 1 : 0;
}

#endif
