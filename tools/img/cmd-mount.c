/* SPDX-License-Identifier: MIT */
/*
 * img mount / img umount: front ends to img-fuse. `img mount [options]
 * IMAGE MOUNTPOINT` runs the img-fuse installed next to img (else the one in
 * PATH) with the same arguments. `img umount MOUNTPOINT` asks the daemon
 * for its pid (an ioctl on the mounted disk file), unmounts with fusermount3
 * -u and then waits until that process has exited, i.e. until the image is
 * flushed and closed, so that the image can be used as soon as it returns.
 */
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

extern char **environ;

/* The same number as fuse/fuse-fs.h's IMG_FUSE_IOC_PID. */
#define IMG_FUSE_IOC_PID _IOR('i', 0x70, uint32_t)

/* How long umount waits for the daemon to flush and exit. */
#define UMOUNT_WAIT_MS 120000

int cmd_mount(int argc, char **argv)
{
	char *bin = img_sibling_program("img-fuse");

	if (!bin)
		return cli_fail(1, "out of memory");
	argv[0] = "img-fuse";
	execvp(bin, argv);
	cli_fail(1, "cannot run %s: %s", bin, strerror(errno));
	free(bin);
	return 1;
}

/* The pid of the img-fuse serving mountpoint, or 0 if it does not say. */
static pid_t daemon_pid(const char *mountpoint)
{
	struct stat st;
	uint32_t pid = 0;
	char *path;
	int fd;

	if (stat(mountpoint, &st) < 0)
		return 0;
	if (S_ISDIR(st.st_mode)) {
		if (asprintf(&path, "%s/disk", mountpoint) < 0)
			return 0;
	} else {
		path = strdup(mountpoint);
		if (!path)
			return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	free(path);
	if (fd < 0)
		return 0;
	if (ioctl(fd, IMG_FUSE_IOC_PID, &pid) < 0)
		pid = 0;
	close(fd);
	return (pid_t)pid;
}

static int run_fusermount(const char *mountpoint)
{
	char *args[] = { "fusermount3", "-u", "--", (char *)mountpoint, NULL };
	int status, ret;
	pid_t pid;

	ret = posix_spawnp(&pid, "fusermount3", NULL, NULL, args, environ);
	if (ret)
		return cli_fail(1, "cannot run fusermount3: %s", strerror(ret));
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return cli_fail(1, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return 1; /* fusermount3 said why */
	return 0;
}

int cmd_umount(int argc, char **argv)
{
	struct pollfd p = { .fd = -1, .events = POLLIN };
	const char *mountpoint;
	pid_t pid;
	int ret;

	if (argc != 2 || argv[1][0] == '-')
		return cli_usage_error(1, "usage: img umount MOUNTPOINT");
	mountpoint = argv[1];
	pid = daemon_pid(mountpoint);
	/* Hold the process before unmounting so a recycled pid is never
	 * mistaken for it. */
	if (pid > 0)
		p.fd = (int)syscall(SYS_pidfd_open, pid, 0);
	ret = run_fusermount(mountpoint);
	if (ret || p.fd < 0) {
		if (p.fd >= 0)
			close(p.fd);
		return ret;
	}
	do
		ret = poll(&p, 1, UMOUNT_WAIT_MS);
	while (ret < 0 && errno == EINTR);
	close(p.fd);
	if (ret == 0)
		return cli_fail(1,
				"img-fuse (pid %ld) is still closing the image",
				(long)pid);
	return 0;
}
