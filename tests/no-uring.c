/* SPDX-License-Identifier: MIT */
/*
 * no-uring: run a program the way a container that refuses io_uring runs it.
 * It installs a seccomp filter under which io_uring_setup, io_uring_enter and
 * io_uring_register fail with ENOSYS (a kernel without io_uring, or a policy
 * that pretends so) or EPERM (Docker's default profile, and the
 * kernel.io_uring_disabled sysctl), checks that the filter took, then execs
 * its arguments. tests/run.sh runs every unit test a second time under it so
 * that libimg's psync fallback (IMG_IO_AUTO) sees the whole unit suite.
 * IMG_TEST_NO_URING is set to the errno's name so a test can tell it runs
 * here and what to expect.
 *
 * Usage: no-uring [-e ENOSYS|EPERM] PROGRAM [ARG...]   (default EPERM)
 * Exits 2 on a usage error, 77 (skip) when seccomp is unavailable here, 1
 * when the filter does not refuse io_uring_setup, 127 when exec fails.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#elif defined(__i386__)
#define NATIVE_ARCH AUDIT_ARCH_I386
#else
#error "no-uring: add this architecture's AUDIT_ARCH_* value"
#endif

static int usage(void)
{
	fprintf(stderr, "usage: no-uring [-e ENOSYS|EPERM] PROGRAM [ARG...]\n");
	return 2;
}

/*
 * Only native-ABI calls are matched: every program the tests run is native,
 * and another ABI's numbering of these calls differs (x86's x32 and i386).
 */
static int install_filter(int err)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 0, 5),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 0,
			 1),
		BPF_STMT(BPF_RET | BPF_K,
			 SECCOMP_RET_ERRNO |
				 (unsigned)(err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = sizeof(filter) / sizeof(filter[0]),
		.filter = filter,
	};

	/* Unprivileged filters need no_new_privs; it also survives exec. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -errno;
	return 0;
}

int main(int argc, char **argv)
{
	struct io_uring_params p;
	const char *name = "EPERM";
	int err = EPERM, opt, ret;
	long r;

	while ((opt = getopt(argc, argv, "+e:")) != -1) {
		if (opt != 'e')
			return usage();
		name = optarg;
		if (!strcmp(optarg, "ENOSYS"))
			err = ENOSYS;
		else if (!strcmp(optarg, "EPERM"))
			err = EPERM;
		else
			return usage();
	}
	if (optind >= argc)
		return usage();

	ret = install_filter(err);
	if (ret < 0) {
		fprintf(stderr, "no-uring: skip: cannot install seccomp: %s\n",
			strerror(-ret));
		return 77;
	}
	/* A filter that lets the call through would make every test under
	 * it pass without ever reaching the fallback. */
	memset(&p, 0, sizeof(p));
	r = syscall(__NR_io_uring_setup, 1, &p);
	if (r >= 0 || errno != err) {
		fprintf(stderr,
			"no-uring: io_uring_setup returned %ld (%s) under the filter, not %s\n",
			r, r >= 0 ? "a ring" : strerror(errno), name);
		if (r >= 0)
			close((int)r);
		return 1;
	}
	if (setenv("IMG_TEST_NO_URING", name, 1) < 0) {
		perror("no-uring: setenv");
		return 1;
	}
	execvp(argv[optind], argv + optind);
	fprintf(stderr, "no-uring: cannot run '%s': %s\n", argv[optind],
		strerror(errno));
	return 127;
}
