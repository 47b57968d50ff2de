/* SPDX-License-Identifier: MIT */
/*
 * info.json of an img-fuse mount: the output of `img info --output=json
 * --backing-chain` for the mounted image. It runs the img binary installed
 * next to img-fuse rather than a second copy of its printer, so the file
 * always holds exactly what the command prints (key order, layout, the
 * fields other parts of img add), after the mount's own writes have been
 * flushed so that the on-disk metadata it reads is current.
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuse-fs.h"

extern char **environ;

/* info.json larger than this is refused (a chain of 64 images is ~100 KiB). */
#define INFO_MAX_LEN (16u << 20)

/* Read everything from fd into a growing buffer. */
static int read_all(int fd, char **out, size_t *len)
{
	size_t cap = 16384, n = 0;
	char *buf = malloc(cap), *nb;
	ssize_t r;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			if (cap >= INFO_MAX_LEN) {
				free(buf);
				return -EFBIG;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			r = -errno;
			free(buf);
			return (int)r;
		}
		if (!r)
			break;
		n += (size_t)r;
	}
	*out = buf;
	*len = n;
	return 0;
}

int fs_info_json(struct fs *fs, char **out, size_t *len)
{
	char *argv[] = {
		fs->img_tool,
		"info",
		"--output=json",
		"--backing-chain",
		"-U",
		"-f",
		(char *)img_format(fs->img),
		fs->image_path,
		NULL,
	};
	posix_spawn_file_actions_t fa;
	int pipefd[2], ret, status;
	pid_t pid;

	ret = fs_flush(fs);
	if (ret < 0)
		return ret;
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
					 O_RDONLY, 0);
	ret = -posix_spawnp(&pid, fs->img_tool, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (ret < 0) {
		close(pipefd[0]);
		return img_error(ret, "img-fuse: cannot run %s: %s",
				 fs->img_tool, strerror(-ret));
	}
	ret = read_all(pipefd[0], out, len);
	close(pipefd[0]);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = -1;
			break;
		}
	}
	if (ret < 0)
		return ret;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		free(*out);
		return img_error(-EIO, "img-fuse: %s info failed on '%s'",
				 fs->img_tool, fs->image_path);
	}
	return 0;
}
