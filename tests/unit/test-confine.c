/* SPDX-License-Identifier: MIT */
/*
 * Tests for img_io_open_beneath (lib/confine.c), the confinement of the files
 * an image names to its directory: on every backend (psync, io_uring, auto),
 * with openat2 and again in a child where seccomp makes openat2 fail ENOSYS
 * (the /proc/self/fd fallback), names that stay inside open (plain, through
 * a symlink to a file, through a symlink to a directory) and read the right
 * file; names that leave fail -EXDEV with a message (symlink to a file
 * outside, to a directory outside, "..", an absolute name, a magic link,
 * an "rbd:" name); a missing file is -ENOENT.
 */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "internal.h"
#include "tap.h"

/* io_uring last: where no ring can be set up (tests/no-uring.c) it is
 * dropped from the list. */
static const enum img_io_kind kinds[] = { IMG_IO_PSYNC, IMG_IO_AUTO,
					  IMG_IO_URING };
static size_t n_kinds = IMG_ARRAY_SIZE(kinds);

static void put(const char *name, char byte)
{
	FILE *f = fopen(test_path(name), "w");

	CHECK(f && fputc(byte, f) == byte && fclose(f) == 0);
}

static void setup(void)
{
	char target[600];

	CHECK(mkdir(test_path("img"), 0755) == 0);
	CHECK(mkdir(test_path("img/data"), 0755) == 0);
	CHECK(mkdir(test_path("out"), 0755) == 0);
	put("img/plain", 'p');
	put("img/data/inner", 'i');
	put("out/secret", 's');
	CHECK(symlink("plain", test_path("img/to-plain")) == 0);
	CHECK(symlink("data", test_path("img/to-data")) == 0);
	CHECK(symlink("../out/secret", test_path("img/to-secret")) == 0);
	CHECK(symlink(test_path("out"), test_path("img/to-out")) == 0);
	CHECK(symlink("/proc/self/root", test_path("img/magic")) == 0);
	snprintf(target, sizeof(target), "magic%s", test_path("out/secret"));
	CHECK(symlink(target, test_path("img/via-magic")) == 0);
}

/* name opens beneath img/ with every backend and reads want. */
static void inside(const char *name, char want)
{
	for (size_t k = 0; k < n_kinds; k++) {
		struct img_io *io = NULL;
		char c = 0;

		CHECK_OK(img_io_open_beneath(test_path("img"), name,
					     IMG_IO_RDONLY, kinds[k], &io));
		if (!io)
			continue;
		CHECK_OK(img_io_pread(io, &c, 1, 0));
		CHECK_EQ(c, want);
		CHECK_STR_HAS(io->path, name);
		img_io_close(io);
	}
}

static void outside(const char *name, int err)
{
	for (size_t k = 0; k < n_kinds; k++) {
		struct img_io *io = NULL;

		img_clear_error();
		CHECK_ERR(img_io_open_beneath(test_path("img"), name,
					      IMG_IO_RDONLY, kinds[k], &io),
			  err);
		CHECK(io == NULL);
		if (err == -EXDEV)
			CHECK_STR_HAS(img_last_error(), "outside");
	}
}

static void run_cases(void)
{
	inside("plain", 'p');
	inside("to-plain", 'p');
	inside("data/inner", 'i');
	inside("to-data/inner", 'i');
	inside("./to-data/../plain", 'p');
	outside("to-secret", -EXDEV);
	outside("to-out/secret", -EXDEV);
	outside("../out/secret", -EXDEV);
	outside("data/../../out/secret", -EXDEV);
	outside(test_path("out/secret"), -EXDEV);
	outside("via-magic", -EXDEV);
	outside("rbd:pool/image", -EXDEV);
	outside("missing", -ENOENT);
}

/* The same where openat2 is not there (seccomp answers ENOSYS). */
static int child_without_openat2(void)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { IMG_ARRAY_SIZE(filter), filter };
	struct open_how how = { .flags = O_RDONLY };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return 77;
	CHECK(syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof(how)) < 0 &&
	      errno == ENOSYS);
	run_cases();
	return tap_failures ? 1 : 0;
}

int main(void)
{
	struct img_io *io;
	int st, ret;
	pid_t pid;

	setup();
	ret = img_io_open(test_path("img/plain"), IMG_IO_RDONLY, IMG_IO_URING,
			  &io);
	if (ret == -ENOSYS) {
		test_note("no io_uring here: %s", img_last_error());
		n_kinds--;
	} else {
		CHECK_OK(ret);
		if (ret >= 0)
			img_io_close(io);
	}
	run_cases();
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		_exit(child_without_openat2());
	CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		test_note("seccomp unavailable: the fallback is not tested");
	else
		CHECK_EQ(WEXITSTATUS(st), 0);
	return test_done();
}
