/* SPDX-License-Identifier: MIT */
/*
 * img-fuse: mount a disk image as files. `img-fuse [options] IMAGE
 * MOUNTPOINT` shows MOUNTPOINT/disk (the guest contents as a raw file),
 * MOUNTPOINT/info.json and MOUNTPOINT/snapshots/NAME; with --file,
 * MOUNTPOINT is a regular file that becomes the disk. This file parses the
 * options, opens the image, mounts and runs libfuse's multi-threaded loop.
 *
 * Without -f the process forks first and the child does all the work; the
 * parent exits 0 only once the child has opened the image, mounted and
 * written the pid file, so a script can use the mount as soon as the command
 * returns (and sees the child's error and exit 1 otherwise). Forking before
 * anything else is opened keeps io_uring rings and threads out of the fork.
 * Unmounting (fusermount3 -u, img umount) or SIGTERM/SIGINT/SIGHUP ends the
 * loop; the image is then flushed and closed before the process exits.
 */
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuse-fs.h"

#define IMG_FUSE_VERSION "0.1.0"

struct options {
	const char *image;
	const char *mountpoint;
	const char *format;
	const char *pid_file;
	unsigned flags; /* IMG_OPEN_* */
	enum img_io_kind io;
	bool foreground;
	bool file_mode;
	bool growable;
	bool writethrough;
	bool allow_other;
	bool debug;
	unsigned threads;
	struct img_kv *kv; /* -o: format options (encrypt.key-secret=ID) */
	size_t n_kv;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: img-fuse [options] IMAGE MOUNTPOINT\n"
		"Mount a disk image: MOUNTPOINT/disk is its contents as a raw "
		"file,\n"
		"MOUNTPOINT/info.json what `img info --output=json "
		"--backing-chain` prints,\n"
		"MOUNTPOINT/snapshots/NAME each internal snapshot "
		"(read-only).\n"
		"\n"
		"  -r, --read-only        mount read-only\n"
		"  -f, --foreground       stay in the foreground (default: "
		"detach once mounted)\n"
		"      --file             MOUNTPOINT is a regular file that "
		"becomes the disk\n"
		"      --format=FMT       image format (default: probe)\n"
		"      --growable         writes past the end and truncate "
		"resize the image\n"
		"      --pid-file=PATH    write the daemon's pid to PATH\n"
		"      --allow-other      let other users access the mount\n"
		"  -t, --cache=MODE       none, writeback (default), "
		"writethrough, directsync, unsafe\n"
		"      --aio=MODE         io_uring, threads (default: io_uring "
		"when available)\n"
		"      --threads=N        FUSE worker threads (default 16)\n"
		"  -o, --options=K=V,...  format options, e.g. "
		"encrypt.key-secret=ID\n"
		"      --object secret,id=ID,file=PATH[,format=raw|base64]\n"
		"      --key-file=PATH    passphrase of an encrypted image\n"
		"      --key-fd=N         read the passphrase from fd N\n"
		"      --kdf-max-iter=N   accept LUKS key slots of up to N "
		"PBKDF2 iterations\n"
		"      --untrusted        the image comes from others: refuse "
		"references to\n"
		"                         other files, cap metadata memory\n"
		"  -d, --debug            print every FUSE request (implies "
		"-f)\n"
		"  -h, --help             this help\n"
		"  -V, --version          print the version\n"
		"Unmount with `img umount MOUNTPOINT` or `fusermount3 -u "
		"MOUNTPOINT`.\n");
}

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
	va_list ap;

	fputs("img-fuse: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int parse_cache(const char *mode, struct options *o)
{
	if (!strcmp(mode, "none") || !strcmp(mode, "off")) {
		o->flags |= IMG_OPEN_DIRECT;
	} else if (!strcmp(mode, "writeback")) {
	} else if (!strcmp(mode, "writethrough")) {
		o->writethrough = true;
	} else if (!strcmp(mode, "directsync")) {
		o->flags |= IMG_OPEN_DIRECT;
		o->writethrough = true;
	} else if (!strcmp(mode, "unsafe")) {
		o->flags |= IMG_OPEN_UNSAFE;
	} else {
		return -EINVAL;
	}
	return 0;
}

/* Load a passphrase given by --key-file / --key-fd as the default secret. */
static int load_default_secret(const char *file, int fd)
{
	struct img_secret *s;
	int ret;

	ret = file ? img_secret_from_file(file, false, &s) :
		     img_secret_from_fd(fd, &s);
	if (ret < 0)
		return ret;
	ret = img_secret_register(NULL, s);
	if (ret < 0)
		img_secret_free(s);
	return ret;
}

/* Returns -1 to continue, else the exit code. */
static int parse_args(int argc, char **argv, struct options *o)
{
	enum {
		OPT_FILE = 256,
		OPT_FORMAT,
		OPT_GROWABLE,
		OPT_PID_FILE,
		OPT_ALLOW_OTHER,
		OPT_AIO,
		OPT_THREADS,
		OPT_OBJECT,
		OPT_KEY_FILE,
		OPT_KEY_FD,
		OPT_KDF_MAX_ITER,
		OPT_UNTRUSTED,
	};
	static const struct option longopts[] = {
		{ "read-only", no_argument, NULL, 'r' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "file", no_argument, NULL, OPT_FILE },
		{ "format", required_argument, NULL, OPT_FORMAT },
		{ "growable", no_argument, NULL, OPT_GROWABLE },
		{ "pid-file", required_argument, NULL, OPT_PID_FILE },
		{ "allow-other", no_argument, NULL, OPT_ALLOW_OTHER },
		{ "cache", required_argument, NULL, 't' },
		{ "aio", required_argument, NULL, OPT_AIO },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "options", required_argument, NULL, 'o' },
		{ "object", required_argument, NULL, OPT_OBJECT },
		{ "key-file", required_argument, NULL, OPT_KEY_FILE },
		{ "key-fd", required_argument, NULL, OPT_KEY_FD },
		{ "kdf-max-iter", required_argument, NULL, OPT_KDF_MAX_ITER },
		{ "untrusted", no_argument, NULL, OPT_UNTRUSTED },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *key_file = NULL;
	int key_fd = -1, c, ret;
	char *end;
	long v;

	o->threads = 16;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":rft:o:dhV", longopts, NULL)) !=
	       -1) {
		switch (c) {
		case 'r':
			/* Shared: a read-only mount does not lock writers
			 * out; it follows the snapshots they make. */
			o->flags |= IMG_OPEN_RDONLY | IMG_OPEN_SHARED;
			break;
		case 'f':
			o->foreground = true;
			break;
		case 'd':
			o->debug = true;
			o->foreground = true;
			break;
		case OPT_FILE:
			o->file_mode = true;
			break;
		case OPT_FORMAT:
			o->format = optarg;
			break;
		case OPT_GROWABLE:
			o->growable = true;
			break;
		case OPT_PID_FILE:
			o->pid_file = optarg;
			break;
		case OPT_ALLOW_OTHER:
			o->allow_other = true;
			break;
		case 't':
			if (parse_cache(optarg, o) < 0)
				return fail("invalid cache mode '%s'", optarg);
			break;
		case OPT_AIO:
			if (!strcmp(optarg, "io_uring"))
				o->io = IMG_IO_URING;
			else if (!strcmp(optarg, "threads") ||
				 !strcmp(optarg, "psync"))
				o->io = IMG_IO_PSYNC;
			else if (!strcmp(optarg, "native"))
				o->io = IMG_IO_AUTO;
			else
				return fail("invalid aio mode '%s'", optarg);
			break;
		case OPT_THREADS:
			v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 256)
				return fail(
					"--threads must be 1..256, not '%s'",
					optarg);
			o->threads = (unsigned)v;
			break;
		case 'o':
			ret = img_kv_parse(optarg, &o->kv, &o->n_kv);
			if (ret < 0)
				return fail("invalid -o '%s': %s", optarg,
					    img_last_error());
			break;
		case OPT_OBJECT:
			ret = img_secret_object(optarg);
			if (ret < 0)
				return fail("%s", img_last_error());
			break;
		case OPT_KEY_FILE:
			key_file = optarg;
			break;
		case OPT_KEY_FD:
			v = strtol(optarg, &end, 10);
			if (*end || v < 0 || v > INT_MAX)
				return fail("invalid --key-fd '%s'", optarg);
			key_fd = (int)v;
			break;
		case OPT_KDF_MAX_ITER: {
			unsigned long long n = strtoull(optarg, &end, 10);

			if (*end || !n)
				return fail("invalid --kdf-max-iter '%s'",
					    optarg);
			img_luks_set_max_iter(n);
			break;
		}
		case OPT_UNTRUSTED:
			o->flags |= IMG_OPEN_UNTRUSTED;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("img-fuse version %s\n", IMG_FUSE_VERSION);
			return 0;
		case ':':
			return fail("option '%s' requires an argument",
				    argv[optind - 1]);
		default:
			fail("unrecognized option '%s'", argv[optind - 1]);
			usage(stderr);
			return 1;
		}
	}
	if (argc - optind != 2) {
		fail("%s", "expected IMAGE and MOUNTPOINT");
		usage(stderr);
		return 1;
	}
	o->image = argv[optind];
	o->mountpoint = argv[optind + 1];
	if (o->growable && (o->flags & IMG_OPEN_RDONLY))
		return fail("%s", "--growable and --read-only exclude each "
				  "other");
	if (key_file || key_fd >= 0) {
		ret = load_default_secret(key_file, key_fd);
		if (ret < 0)
			return fail("cannot read the passphrase: %s",
				    img_last_error());
	}
	return -1;
}

/* "-o" mount options; fsname shows the image (commas escaped for libfuse). */
static char *mount_options(const struct options *o, const char *image)
{
	size_t n = strlen(image), j = 0;
	char *esc = malloc(2 * n + 1), *s;

	if (!esc)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (image[i] == ',' || image[i] == '\\')
			esc[j++] = '\\';
		esc[j++] = image[i];
	}
	esc[j] = '\0';
	if (asprintf(&s, "fsname=%s,subtype=img,default_permissions%s%s", esc,
		     o->allow_other ? ",allow_other" : "",
		     (o->flags & IMG_OPEN_RDONLY) ? ",ro" : "") < 0)
		s = NULL;
	free(esc);
	return s;
}

static int write_pid_file(const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f)
		return -errno;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0)
		return -errno;
	return 0;
}

/* Tell the waiting parent the outcome (one byte: 0 ok, 1 failed). */
static void notify_parent(int fd, bool ok)
{
	char c = ok ? 0 : 1;

	if (fd < 0)
		return;
	while (write(fd, &c, 1) < 0 && errno == EINTR)
		;
	close(fd);
}

/* Fork; the parent waits for the child's word and exits with it. */
static int fork_and_wait(int *notify_fd)
{
	int p[2];
	pid_t pid;
	char c;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) < 0)
		return fail("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		return fail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[0]);
		*notify_fd = p[1];
		setsid();
		return -1;
	}
	close(p[1]);
	do
		n = read(p[0], &c, 1);
	while (n < 0 && errno == EINTR);
	if (n == 1 && c == 0)
		_exit(0);
	/* The child printed its error; reap it if it is already gone. */
	waitpid(pid, NULL, WNOHANG);
	_exit(1);
}

/* Detach stdio from the terminal once the mount works. */
static void detach_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

/*
 * An encrypted image given no passphrase, with a terminal on stdin: ask for
 * it now, before the fork (the image is opened again after it).
 */
static void maybe_prompt(const struct options *o)
{
	struct img_open_opts po = {
		.format = o->format,
		.flags = IMG_OPEN_RDONLY | IMG_OPEN_NO_BACKING |
			 IMG_OPEN_NO_IO | (o->flags & IMG_OPEN_UNTRUSTED),
		.io = IMG_IO_PSYNC,
	};
	struct img_secret *s;
	struct img_info info;
	struct img *img;
	char prompt[PATH_MAX + 32];

	if (o->n_kv || img_secret_lookup(NULL) || !isatty(STDIN_FILENO))
		return;
	if (img_open(o->image, &po, &img) < 0)
		return; /* the real open reports it */
	memset(&info, 0, sizeof(info));
	if (img_info(img, &info) < 0 || !info.encrypted) {
		img_close(img);
		return;
	}
	img_close(img);
	snprintf(prompt, sizeof(prompt), "Password for '%s'", o->image);
	if (img_secret_prompt(prompt, &s) < 0)
		return;
	if (img_secret_register(NULL, s) < 0)
		img_secret_free(s);
}

static int check_mountpoint(const struct options *o)
{
	struct stat st;

	if (stat(o->mountpoint, &st) < 0)
		return fail("cannot access mount point '%s'", o->mountpoint);
	if (o->file_mode && !S_ISREG(st.st_mode))
		return fail("--file needs a regular file as mount point, not "
			    "'%s'",
			    o->mountpoint);
	if (!o->file_mode && !S_ISDIR(st.st_mode))
		return fail("mount point '%s' is not a directory (use --file "
			    "for a file)",
			    o->mountpoint);
	return 0;
}

static int open_image(struct fs *fs, const struct options *o)
{
	int ret;

	/* rbd: names are no host paths (lib/io-rbd.c). */
	if (!strncmp(o->image, "rbd:", 4))
		fs->image_path = strdup(o->image);
	else
		fs->image_path = realpath(o->image, NULL);
	if (!fs->image_path)
		return fail("cannot open '%s': no such file", o->image);
	fs->open_opts.format = o->format;
	/* A hole punched in the disk gives its space back to the host. */
	fs->open_opts.flags = o->flags | IMG_OPEN_UNMAP;
	fs->open_opts.io = o->io;
	fs->open_opts.opts = o->kv;
	fs->open_opts.n_opts = o->n_kv;
	ret = img_open(fs->image_path, &fs->open_opts, &fs->img);
	if (ret < 0)
		return fail("%s", img_last_error());
	/* Views of snapshots and listings never probe again. */
	fs->open_opts.format = img_format(fs->img);
	fs->read_only = img_read_only(fs->img);
	fs->file_mode = o->file_mode;
	fs->growable = o->growable;
	fs->writethrough = o->writethrough;
	fs->img_tool = img_sibling_program("img");
	if (!fs->img_tool)
		return fail("%s", "out of memory");
	return 0;
}

static int run(struct fs *fs, const struct options *o, int notify_fd)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg = NULL;
	struct fuse_session *se = NULL;
	char *mnt = NULL, *mopts = NULL;
	bool mounted = false;
	int ret = 1;

	mnt = realpath(o->mountpoint, NULL);
	mopts = mount_options(o, fs->image_path);
	if (!mnt || !mopts || fuse_opt_add_arg(&args, "img-fuse") < 0 ||
	    fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, mopts) < 0 ||
	    (o->debug && fuse_opt_add_arg(&args, "-d") < 0)) {
		fail("%s", "out of memory");
		goto out;
	}
	se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	if (!se) {
		fail("%s", "cannot create the FUSE session");
		goto out;
	}
	if (fuse_set_signal_handlers(se) != 0) {
		fail("%s", "cannot set signal handlers");
		goto out;
	}
	if (fuse_session_mount(se, mnt) != 0) {
		fail("cannot mount on '%s'", mnt);
		goto out;
	}
	mounted = true;
	if (o->pid_file && write_pid_file(o->pid_file) < 0) {
		fail("cannot write pid file '%s'", o->pid_file);
		goto out;
	}
	cfg = fuse_loop_cfg_create();
	if (!cfg) {
		fail("%s", "out of memory");
		goto out;
	}
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, o->threads);
	fuse_loop_cfg_set_idle_threads(cfg, o->threads);
	if (notify_fd >= 0) {
		if (chdir("/") < 0)
			goto out;
		detach_stdio();
		notify_parent(notify_fd, true);
		notify_fd = -1;
	}
	ret = fuse_session_loop_mt(se, cfg) != 0 ? 1 : 0;
out:
	if (se) {
		if (mounted)
			fuse_session_unmount(se);
		fuse_remove_signal_handlers(se);
	}
	/* Flush and close while the session is still alive, so that a
	 * waiting `img umount` sees a closed image once the process ends. */
	if (img_close(fs->img) < 0)
		ret = 1;
	fs->img = NULL;
	if (se)
		fuse_session_destroy(se);
	if (mounted && o->pid_file)
		unlink(o->pid_file);
	fuse_loop_cfg_destroy(cfg);
	fuse_opt_free_args(&args);
	free(mopts);
	free(mnt);
	notify_parent(notify_fd, false);
	return ret;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct fs fs;
	int notify_fd = -1, ret;

	ret = parse_args(argc, argv, &o);
	if (ret >= 0)
		goto out;
	ret = 1;
	if (check_mountpoint(&o))
		goto out;
	maybe_prompt(&o);
	if (!o.foreground) {
		ret = fork_and_wait(&notify_fd);
		if (ret >= 0)
			goto out;
	}
	fs_init_state(&fs);
	if (open_image(&fs, &o)) {
		img_close(fs.img);
		notify_parent(notify_fd, false);
		ret = 1;
	} else {
		ret = run(&fs, &o, notify_fd);
	}
	fs_release_state(&fs);
out:
	img_secret_clear();
	img_kv_free(o.kv, o.n_kv);
	return ret;
}
