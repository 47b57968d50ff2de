/* SPDX-License-Identifier: MIT */
/*
 * Shared pieces of the img command-line tool: the subcommand entry points
 * (one cmd-<name>.c each), error printing with qemu-img's exit codes, option
 * parsing helpers and the progress bar.
 */
#ifndef IMG_CLI_H
#define IMG_CLI_H

#include <stdbool.h>
#include <stddef.h>
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
int cmd_commit(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_amend(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);

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

/* A progress bar ("    (42.00/100%)\r" on stdout, as qemu-img -p prints). */
struct cli_progress {
	bool enabled;
	uint64_t total;
	uint64_t done;
	double last_pct;
	char suffix[48]; /* printed after the percentage (convert -c ratio) */
};
void cli_progress_init(struct cli_progress *p, bool enabled, uint64_t total);
void cli_progress_add(struct cli_progress *p, uint64_t bytes);
void cli_progress_end(struct cli_progress *p);
/* An img_progress callback (opaque: a struct cli_progress) showing
 * done/total. */
void cli_progress_cb(void *opaque, uint64_t done, uint64_t total);

/* Human sizes as qemu-img prints them: "64 MiB", "1.25 MiB", "512 B". */
void cli_human_size(uint64_t bytes, char *buf, size_t buf_size);

/* Print s as a JSON string literal (quotes and escapes) to stdout. */
void cli_json_string(const char *s);

/* ---- additions (tools/img/cli.c) ---- */

enum { CLI_OUTPUT_HUMAN, CLI_OUTPUT_JSON };

/* img_last_error() if set, else strerror(-err). */
const char *cli_errmsg(int err);
/* "img: <message>" then "Try 'img --help' ..." on stderr; returns exit_code. */
int cli_usage_error(int exit_code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Report getopt's '?' or ':' result (opt) for argv[optind - 1]; returns 1. */
int cli_bad_option(char **argv, int opt);
/* --output=human|json; prints qemu-img's error and returns -EINVAL if bad. */
int cli_parse_output(const char *s, int *fmt);
/* Parse a size; on error prints qemu-img's "Invalid <what> specified..." */
int cli_parse_size_msg(const char *s, uint64_t *out, const char *what);
/* img_open printing "img: Could not open 'path': <reason>" on failure. */
int cli_open(const char *path, const char *fmt, unsigned flags,
	     enum img_io_kind io, struct img **out);
/* qemu's path_combine: name relative to base's directory (malloc'd). */
char *cli_path_combine(const char *base, const char *name);
/* qemu-io's cvtstr: "4 KiB", "1.062 MiB", "40 bytes". */
void cli_cvtstr(double value, char *buf, size_t buf_size);

/*
 * JSON values printed as qemu-img prints them: objects list their members in
 * QEMU's QDict iteration order, pretty-printed with 4-space indentation.
 * Adding a child transfers ownership to the parent. Out of memory exits.
 */
struct cli_json;
struct cli_json *cli_json_object(void);
struct cli_json *cli_json_array(void);
/* key is NULL when parent is an array. */
void cli_json_add(struct cli_json *parent, const char *key,
		  struct cli_json *child);
void cli_json_add_str(struct cli_json *parent, const char *key, const char *v);
void cli_json_add_int(struct cli_json *parent, const char *key, int64_t v);
void cli_json_add_bool(struct cli_json *parent, const char *key, bool v);
/* Print pretty JSON and a newline to stdout. */
void cli_json_print(const struct cli_json *j);
/* qemu's dump_qdict: "<indent>key with spaces: value" lines to stdout. */
void cli_json_dump_human(const struct cli_json *obj, int level);
void cli_json_free(struct cli_json *j);

/* Add the image's persistent bitmaps as "bitmaps" to a format-specific
 * data object, as qemu-img info shows them (nothing if there are none). */
void cli_bitmap_info(struct img *img, struct cli_json *data);
/* convert --bitmaps (tools/img/cmd-bitmap.c), with qemu-img's messages: can
 * the sources' bitmaps go to dst (-1, error printed, if not), and after the
 * copy, add every bitmap of src to dst with its flags and contents. */
int cli_convert_bitmaps_check(struct img *src, unsigned n_srcs, struct img *dst,
			      bool skip_broken);
int cli_convert_bitmaps_copy(struct img *src, struct img *dst,
			     bool skip_broken);

/* ---- internal snapshots (tools/img/cmd-snapshot.c) ---- */

/* Open the read-only view of internal snapshot `snapshot` of path (convert
 * -l), printing "img: Could not open ..." on failure. */
int cli_open_snapshot(const char *path, const char *fmt, unsigned flags,
		      const char *snapshot, struct img **out);
/* img info: the "Snapshot list:" table / the "snapshots" JSON array (nothing
 * when the image has no snapshots). */
void cli_snapshot_info_human(struct img *img);
void cli_snapshot_info_json(struct img *img, struct cli_json *obj);
/* convert -l: "NAME", "snapshot.id=ID" or "snapshot.name=NAME" to the name
 * or id to open (static storage); prints the error and returns 1 if bad. */
int cli_snapshot_param(const char *arg, const char **out);
/* convert --snapshots: copy each internal snapshot of src (oldest first),
 * then the live image, into dst (opened, of src's size), writing only what
 * changed from one to the next. Returns the exit code (error printed). */
int cli_convert_snapshots(const char *src_path, const char *src_fmt,
			  unsigned src_flags, struct img *src, struct img *dst);

/* Is fmt a format this build supports? */
bool cli_format_known(const char *fmt);
/* Is key among the options listed in help (img_create_help text)? */
bool cli_option_listed(const char *help, const char *key);
/* Does an -o string ask for the option list ("help" or "?")? */
bool cli_has_help_option(const char *s);

/* ---- secrets and --image-opts (tools/img/cli-secret.c) ---- */

/*
 * Take --object, --key-file, --key-fd, --kdf-max-iter, --image-opts,
 * --target-image-opts and --untrusted out of argv[1..] (argv[0] is the subcommand), loading
 * and registering the secrets, and replace each image-options argument by
 * its file name. Returns 0 or the exit code after printing an error.
 */
int cli_secret_args(int *argc, char **argv);
/* IMG_OPEN_UNTRUSTED if --untrusted was given (only info, check, convert,
 * compare, map and dd take it), else 0: for the images a command reads. */
unsigned cli_untrusted(void);
/* Open path (an image just created with the create options kv) with the
 * secret kv names in encrypt.key-secret, if any. */
void cli_secret_target(const char *path, const struct img_kv *kv, size_t n);
/* Apply what --image-opts said about path (driver, encrypt.key-secret). */
void cli_secret_open_opts(const char *path, struct img_open_opts *o);
/* After an open of path with o failed err: if it was for want of a
 * passphrase and stdin is a terminal, ask once and return true (retry). */
bool cli_secret_prompt(const char *path, const struct img_open_opts *o,
		       int err);

#endif
