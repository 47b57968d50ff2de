/* SPDX-License-Identifier: MIT */
/*
 * Shared pieces of the img command-line tool: the subcommand entry points
 * (one cmd-<name>.c each), error printing with qemu-img's exit codes, option
 * parsing helpers and the progress bar.
 */
#ifndef IMG_CLI_H
#define IMG_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "img.h"

/* Subcommands: argv[0] is the subcommand name; return the exit code. */
int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_dd(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Print "img: <message>\n" to stderr and return exit_code. */
int cli_fail(int exit_code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Print "img: <prefix>: <img_last_error() or strerror(-err)>" and return exit_code. */
int cli_fail_img(int exit_code, int err, const char *prefix);

/*
 * qemu-img cache modes (-t/-T): none, writeback, writethrough, directsync,
 * unsafe. Adds IMG_OPEN_DIRECT / IMG_OPEN_UNSAFE to *flags.
 */
int cli_parse_cache(const char *mode, unsigned *flags);
/* IMG_IO_* kind from "io_uring", "native", "threads"/"psync"; NULL = auto. */
int cli_parse_aio(const char *mode, enum img_io_kind *kind);

/* A progress bar on stderr ("    (42.00/100%)\r" as qemu-img -p prints). */
struct cli_progress {
	bool enabled;
	uint64_t total;
	uint64_t done;
	double last_pct;
};
void cli_progress_init(struct cli_progress *p, bool enabled, uint64_t total);
void cli_progress_add(struct cli_progress *p, uint64_t bytes);
void cli_progress_end(struct cli_progress *p);

/* Human sizes as qemu-img prints them: "64 MiB", "1.25 MiB", "512 B". */
void cli_human_size(uint64_t bytes, char *buf, size_t buf_size);

/* Print s as a JSON string literal (quotes and escapes) to stdout. */
void cli_json_string(const char *s);

#endif
