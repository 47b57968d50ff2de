/* SPDX-License-Identifier: MIT */
/*
 * img: the command-line front end, a drop-in for qemu-img's common
 * subcommands. This file holds the command table (name, entry point, one-line
 * summary, syntax), the top-level --help/--version handling and dispatch on
 * argv[1]; each subcommand lives in its own cmd-<name>.c.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define IMG_VERSION "0.1.0"

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
	const char *syntax;
};

static const struct command commands[] = {
	{ "amend", cmd_amend, "change the format options of an image",
	  "amend [-f fmt] [-t cache] [-p] [-q] -o options filename" },
	{ "bench", cmd_bench, "measure image I/O speed",
	  "bench [-c count] [-d depth] [-f fmt] "
	  "[--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] "
	  "[-o offset] [--pattern=pattern] [-q] [-s buffer_size] "
	  "[-S step_size] [-t cache] [-w] [-U] filename" },
	{ "bitmap", cmd_bitmap, "change the persistent bitmaps of an image",
	  "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | "
	  "--disable)... [-b source_file [-F source_fmt]] [-g granularity] "
	  "[-f fmt] filename bitmap" },
	{ "check", cmd_check, "check an image for consistency (and repair it)",
	  "check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] "
	  "[-T src_cache] [-U] [--untrusted] filename" },
	{ "commit", cmd_commit, "write an overlay's data into its backing file",
	  "commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] filename" },
	{ "compare", cmd_compare,
	  "compare the guest-visible contents of two "
	  "images",
	  "compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] "
	  "[--untrusted] "
	  "filename1 filename2" },
	{ "convert", cmd_convert, "convert or copy an image to another format",
	  "convert [--target-is-zero] [--untrusted] [-U] [-C] [-c] [-p] "
	  "[-q] [-n] "
	  "[-f fmt] [-t cache] [-T src_cache] [-O output_fmt] "
	  "[-B backing_file [-F backing_fmt]] [-o options] "
	  "[-S sparse_size] [-m num_coroutines] [-W] "
	  "filename [filename2 [...]] output_filename" },
	{ "create", cmd_create, "create a new image",
	  "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] "
	  "[-o options] filename [size]" },
	{ "dd", cmd_dd, "copy from an image to a new image, dd-style",
	  "dd [-U] [--untrusted] [-f fmt] [-O output_fmt] [bs=block_size] "
	  "[count=blocks] "
	  "[skip=blocks] if=input of=output" },
	{ "info", cmd_info, "show information about an image",
	  "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] "
	  "[--untrusted] filename" },
	{ "io", cmd_io, "run qemu-io style commands on an image",
	  "io [-f fmt] [-r] [-U] [-q] [-t cache] [-i aio] -c command "
	  "[-c command ...] filename" },
	{ "map", cmd_map, "dump the allocation map of an image",
	  "map [-f fmt] [--start-offset=offset] [--max-length=len] "
	  "[--output=ofmt] [-U] [--untrusted] filename" },
	{ "measure", cmd_measure, "compute the size a new image would need",
	  "measure [--output=ofmt] [-O output_fmt] [-o options] "
	  "[--size N | [-f fmt] filename]" },
	{ "mount", cmd_mount, "mount an image as files with img-fuse",
	  "mount [-r] [-f] [--file] [--format=fmt] [--growable] "
	  "[--pid-file=file] [--allow-other] [-t cache] filename mountpoint" },
	{ "rebase", cmd_rebase, "change the backing file of an image",
	  "rebase [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-U] "
	  "-b backing_file [-F backing_fmt] filename" },
	{ "resize", cmd_resize, "change the virtual size of an image",
	  "resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] "
	  "filename [+ | -]size" },
	{ "snapshot", cmd_snapshot,
	  "list, create, apply or delete internal snapshots",
	  "snapshot [-U] [-q] [-f fmt] [-l [--output=ofmt] | -a snapshot | "
	  "-c snapshot | -d snapshot | --diff snapshot [snapshot] "
	  "[--output=ofmt]] filename" },
	{ "umount", cmd_umount,
	  "unmount an img mount and wait until the image is closed",
	  "umount mountpoint" },
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(void)
{
	const char *const *fmts;
	size_t i;

	printf("img version %s\n"
	       "usage: img [standard options] command [command options]\n"
	       "Disk image utility (qemu-img compatible)\n"
	       "\n"
	       "    '-h', '--help'       display this help and exit\n"
	       "    '-V', '--version'    output version information and exit\n"
	       "\n"
	       "Commands:\n",
	       IMG_VERSION);
	for (i = 0; i < N_COMMANDS; i++)
		printf("  %-10s %s\n", commands[i].name, commands[i].summary);
	printf("\nCommand syntax:\n");
	for (i = 0; i < N_COMMANDS; i++)
		printf("  %s\n", commands[i].syntax);
	printf("\n"
	       "Command parameters:\n"
	       "  'filename' is a disk image filename\n"
	       "  'fmt' is the disk image format. It is guessed automatically "
	       "in most cases\n"
	       "  'cache' is the cache mode: 'none', 'writeback' (default), "
	       "'writethrough',\n"
	       "    'directsync' and 'unsafe'\n"
	       "  'size' is the disk image size in bytes. Optional suffixes\n"
	       "    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' "
	       "(gigabyte, 1024M),\n"
	       "    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' "
	       "(exabyte, 1024P) are\n"
	       "    supported.\n"
	       "  'options' is a comma separated list of format specific "
	       "options in a\n"
	       "    name=value format. Use -o help for an overview of the "
	       "options supported by\n"
	       "    the used format\n"
	       "  '-u' allows unsafe backing chains (create: do not open the "
	       "backing file)\n"
	       "  '-p' show progress of command (only certain commands)\n"
	       "  '-q' use Quiet mode - do not print any output (except "
	       "errors)\n"
	       "  '-U' force shared access (no image locking)\n"
	       "  '--untrusted' the image comes from someone else (an "
	       "upload): refuse any\n"
	       "    reference to another file (backing file, data file, "
	       "extent files) and\n"
	       "    cap the metadata memory and key derivation it may ask "
	       "for\n"
	       "\n"
	       "'img <command> --help' shows the syntax of one command.\n"
	       "\nSupported formats:");
	for (fmts = img_formats(); fmts && *fmts; fmts++)
		printf(" %s", *fmts);
	printf("\n");
}

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < N_COMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static void command_help(const struct command *c)
{
	printf("img %s: %s\n\nusage: img %s\n\n"
	       "Run 'img --help' for a description of the parameters.\n",
	       c->name, c->summary, c->syntax);
}

/* Does the subcommand's argument list ask for help? */
static bool wants_help(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return false;
		/* the argument of -c (io) or -o is never a help request */
		if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "-o")) {
			i++;
			continue;
		}
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	}
	return false;
}

int main(int argc, char **argv)
{
	const struct command *c;
	int sub_argc, ret;

	if (argc < 2)
		return cli_usage_error(1, "Not enough arguments");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage();
		return 0;
	}
	if (!strcmp(argv[1], "help")) {
		if (argc > 2 && (c = find_command(argv[2]))) {
			command_help(c);
			return 0;
		}
		usage();
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("img version %s\n", IMG_VERSION);
		return 0;
	}
	if (argv[1][0] == '-')
		return cli_usage_error(1, "unrecognized option '%s'", argv[1]);
	c = find_command(argv[1]);
	if (!c)
		return cli_usage_error(1, "Command not found: %s", argv[1]);
	sub_argc = argc - 1;
	ret = cli_secret_args(&sub_argc, argv + 1);
	if (ret)
		return ret;
	argc = sub_argc + 1;
	if (wants_help(argc - 1, argv + 1)) {
		command_help(c);
		return 0;
	}
	return c->fn(argc - 1, argv + 1);
}
