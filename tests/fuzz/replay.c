/* SPDX-License-Identifier: MIT */
/*
 * A main() for fuzz targets built without libFuzzer: every argument is a file
 * or a directory of files (not recursive), and each file's bytes are passed
 * once to LLVMFuzzerTestOneInput. Lets `make check` replay the corpora (and
 * any crash reproducer) under plain or sanitizer builds. A missing argument
 * or a run that replays no input at all fails: an empty or lost corpus must
 * not pass as a test.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int read_file(const char *path, uint8_t **data, size_t *size)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f)
		return -errno;
	for (;;) {
		size_t n;

		if (len == cap) {
			uint8_t *grown;

			cap = cap ? cap * 2 : 65536;
			grown = realloc(buf, cap);
			if (!grown) {
				free(buf);
				fclose(f);
				return -ENOMEM;
			}
			buf = grown;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	*data = buf;
	*size = len;
	return 0;
}

static int replay_file(const char *path, unsigned long *count)
{
	uint8_t *data = NULL;
	size_t size = 0;
	int ret;

	ret = read_file(path, &data, &size);
	if (ret < 0) {
		fprintf(stderr, "replay: cannot read %s: %s\n", path,
			strerror(-ret));
		return ret;
	}
	LLVMFuzzerTestOneInput(data, size);
	free(data);
	(*count)++;
	return 0;
}

static int replay_dir(const char *dir, unsigned long *count)
{
	struct dirent **names;
	int n, ret = 0;

	n = scandir(dir, &names, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "replay: cannot list %s: %s\n", dir,
			strerror(errno));
		return -errno;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode) && replay_file(path, count) < 0)
			ret = -EIO;
		free(names[i]);
	}
	free(names);
	return ret;
}

int main(int argc, char **argv)
{
	unsigned long count = 0;
	int ret = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
				strerror(errno));
			ret = 1;
		} else if (S_ISDIR(st.st_mode)) {
			if (replay_dir(argv[i], &count) < 0)
				ret = 1;
		} else if (!S_ISREG(st.st_mode)) {
			fprintf(stderr, "replay: %s: not a file or directory\n",
				argv[i]);
			ret = 1;
		} else if (replay_file(argv[i], &count) < 0) {
			ret = 1;
		}
	}
	printf("replayed %lu inputs\n", count);
	if (count == 0) {
		fprintf(stderr, "replay: no input replayed (missing or empty "
				"corpus): this replay tests nothing\n");
		return 1;
	}
	return ret;
}
