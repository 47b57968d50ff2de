/* SPDX-License-Identifier: MIT */
/*
 * Secret and image-option arguments shared by every img subcommand, taken out
 * of argv before the subcommand parses it: qemu-img's --object
 * secret,id=ID,file=PATH[,format=raw|base64] and --image-opts /
 * --target-image-opts (an image named "driver=qcow2,file.filename=PATH,
 * encrypt.key-secret=ID"), plus --key-file PATH and --key-fd N (the default
 * secret for encrypted images that name none) and --kdf-max-iter N (the cap
 * on the key derivation cost of untrusted images), and --untrusted for the
 * subcommands that read an upload (IMG_OPEN_UNTRUSTED on the images they
 * read, never on the images they write). When an encrypted image
 * needs a passphrase that was not given and stdin is a terminal, the user is
 * asked without echo. Secret bytes never pass through argv or the
 * environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* What an --image-opts argument said about one image. */
struct image_opts {
	char *filename;
	char *driver;
	char *key_secret;
	struct img_kv kv; /* encrypt.key-secret=ID for img_open */
};

static struct image_opts *image_opts;
static size_t n_image_opts;
static bool prompted;
static bool untrusted;

/* The subcommands that read an image someone else made without changing it:
 * those a cloud runs on an upload. */
static bool takes_untrusted(const char *cmd)
{
	static const char *const cmds[] = { "info",    "check", "convert",
					    "compare", "map",	"dd" };

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i]))
			return true;
	return false;
}

unsigned cli_untrusted(void)
{
	return untrusted ? IMG_OPEN_UNTRUSTED : 0;
}

static void wipe_at_exit(void)
{
	img_secret_clear();
}

/* Does argv[i] match the long option name (as "--name X" or "--name=X")?
 * Sets *val and how many argv entries it takes. */
static bool match(int argc, char **argv, int i, const char *name,
		  const char **val, int *used)
{
	size_t n = strlen(name);

	if (strncmp(argv[i], name, n))
		return false;
	if (argv[i][n] == '=') {
		*val = argv[i] + n + 1;
		*used = 1;
		return true;
	}
	if (argv[i][n])
		return false;
	*val = i + 1 < argc ? argv[i + 1] : NULL;
	*used = 2;
	return true;
}

static int add_entry(struct image_opts *io)
{
	struct image_opts *a =
		realloc(image_opts, (n_image_opts + 1) * sizeof(*image_opts));

	if (!a)
		return cli_fail(1, "out of memory");
	image_opts = a;
	io->kv.key = "encrypt.key-secret";
	io->kv.value = io->key_secret;
	image_opts[n_image_opts++] = *io;
	return 0;
}

static int parse_image_opts(char **arg)
{
	struct img_kv *kv = NULL;
	struct image_opts io = { 0 };
	size_t n = 0;
	int ret;

	ret = img_kv_parse(*arg, &kv, &n);
	if (ret < 0)
		return cli_fail(1, "Invalid image options '%s': %s", *arg,
				cli_errmsg(ret));
	for (size_t i = 0; i < n && ret == 0; i++) {
		const char *k = kv[i].key, *v = kv[i].value;
		char **dst = !strcmp(k, "file.filename")      ? &io.filename :
			     !strcmp(k, "driver")	      ? &io.driver :
			     !strcmp(k, "encrypt.key-secret") ? &io.key_secret :
								NULL;

		if (dst) {
			free(*dst);
			*dst = strdup(v);
		} else if (strcmp(k, "file.driver") &&
			   strcmp(k, "encrypt.format")) {
			ret = cli_fail(1, "Unsupported image option '%s'", k);
		}
	}
	img_kv_free(kv, n);
	if (ret == 0 && !io.filename)
		ret = cli_fail(1, "Image options '%s' need file.filename",
			       *arg);
	if (ret == 0) {
		ret = add_entry(&io);
		if (ret == 0) {
			*arg = io.filename;
			return 0;
		}
	}
	free(io.filename);
	free(io.driver);
	free(io.key_secret);
	return ret;
}

void cli_secret_target(const char *path, const struct img_kv *kv, size_t n)
{
	struct image_opts io = { 0 };

	for (size_t i = 0; i < n; i++)
		if (!strcmp(kv[i].key, "encrypt.key-secret") && kv[i].value)
			io.key_secret = strdup(kv[i].value);
	if (!io.key_secret)
		return;
	io.filename = strdup(path);
	if (!io.filename || add_entry(&io)) {
		free(io.filename);
		free(io.key_secret);
	}
}

static int add_default(struct img_secret *s, int ret, const char *what)
{
	if (ret < 0)
		return cli_fail(1, "%s: %s", what, cli_errmsg(ret));
	ret = img_secret_register(NULL, s);
	if (ret < 0) {
		img_secret_free(s);
		return cli_fail(1, "%s: only one default secret may be given",
				what);
	}
	return 0;
}

static int take_option(const char *opt, const char *val, bool *image_opts_on)
{
	struct img_secret *s = NULL;
	uint64_t n;
	char *end;
	int ret;

	if (!strcmp(opt, "--untrusted")) {
		untrusted = true;
		return 0;
	}
	if (!strcmp(opt, "--image-opts") ||
	    !strcmp(opt, "--target-image-opts")) {
		*image_opts_on = true;
		return 0;
	}
	if (!val)
		return cli_usage_error(1, "option '%s' requires an argument",
				       opt);
	if (!strcmp(opt, "--object")) {
		ret = img_secret_object(val);
		return ret < 0 ? cli_fail(1, "%s", cli_errmsg(ret)) : 0;
	}
	if (!strcmp(opt, "--key-file")) {
		ret = img_secret_from_file(val, false, &s);
		return add_default(s, ret, "--key-file");
	}
	if (!strcmp(opt, "--key-fd")) {
		long fd = strtol(val, &end, 10);

		if (*end || fd < 0 || fd > 1 << 20)
			return cli_fail(1, "--key-fd: invalid descriptor '%s'",
					val);
		ret = img_secret_from_fd((int)fd, &s);
		return add_default(s, ret, "--key-fd");
	}
	/* --kdf-max-iter */
	n = strtoull(val, &end, 10);
	if (*end || !n)
		return cli_fail(1, "--kdf-max-iter: invalid count '%s'", val);
	img_luks_set_max_iter(n);
	return 0;
}

int cli_secret_args(int *argc, char **argv)
{
	static const char *const opts[] = {
		"--object",	  "--key-file",	  "--key-fd",
		"--kdf-max-iter", "--image-opts", "--target-image-opts",
		"--untrusted"
	};
	bool image_opts_on = false, can_untrust = takes_untrusted(argv[0]);
	int out = 1, ret;

	atexit(wipe_at_exit);
	for (int i = 1; i < *argc;) {
		const char *val = NULL;
		int used = 0;
		size_t k;

		if (!strcmp(argv[i], "--")) {
			/* Operands only from here: keep them as they are. */
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
			bool flag = k >= 4;

			if (flag && !strcmp(argv[i], opts[k]) &&
			    (k < 6 || can_untrust)) {
				used = 1;
				break;
			}
			if (!flag &&
			    match(*argc, argv, i, opts[k], &val, &used))
				break;
		}
		if (!used) {
			argv[out++] = argv[i++];
			continue;
		}
		ret = take_option(opts[k], val, &image_opts_on);
		if (ret)
			return ret;
		i += used;
	}
	for (int i = out; i < *argc; i++)
		argv[i] = NULL;
	*argc = out;
	if (!image_opts_on)
		return 0;
	for (int i = 1; i < *argc; i++) {
		if (argv[i][0] == '-' || !strstr(argv[i], "file.filename="))
			continue;
		/* An option's value (-o k=v) never names file.filename. */
		ret = parse_image_opts(&argv[i]);
		if (ret)
			return ret;
	}
	return 0;
}

void cli_secret_open_opts(const char *path, struct img_open_opts *o)
{
	for (size_t i = 0; i < n_image_opts; i++) {
		if (strcmp(image_opts[i].filename, path))
			continue;
		if (!o->format && image_opts[i].driver)
			o->format = image_opts[i].driver;
		if (image_opts[i].key_secret) {
			o->opts = &image_opts[i].kv;
			o->n_opts = 1;
		}
	}
}

bool cli_secret_prompt(const char *path, const struct img_open_opts *o, int err)
{
	struct img_secret *s;
	char prompt[512];

	if (err != -EACCES || prompted || o->secret || o->n_opts ||
	    img_secret_lookup(NULL) || !isatty(STDIN_FILENO))
		return false;
	prompted = true;
	snprintf(prompt, sizeof(prompt), "Password for '%s'", path);
	if (img_secret_prompt(prompt, &s) < 0)
		return false;
	if (img_secret_register(NULL, s) < 0) {
		img_secret_free(s);
		return false;
	}
	return true;
}
