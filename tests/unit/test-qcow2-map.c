/* SPDX-License-Identifier: MIT */
/*
 * qcow2's .map (struct img_map, lib/img-driver.h) on images qemu-img and
 * qemu-io make: compressed with zlib and zstd, zero clusters (with and
 * without a host cluster), metadata preallocation, extended L2 with partial
 * subclusters over a backing file, LUKS encryption, an external data file,
 * and a small-cluster overlay over a v2 backing file. The test walks .map
 * over the whole disk (in one pass asking for the rest of the disk, and in
 * passes of odd-sized requests that start inside clusters), rebuilds the
 * guest bytes from the extents alone (host reads, img_decompress,
 * img_cipher_run, the backing image for unallocated ranges) and compares
 * them with `qemu-img convert -O raw`; each extent's flags must be what
 * img_block_status reports for the layer.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../formats/qcow2/qcow2.h"
#include "qcow2-testlib.h"
#include "tap.h"

#define DISK (4ull << 20)
#define PASS "map-test-pass"

static const char *secret_obj = "--object secret,id=sec0,data=" PASS;

/* The guest bytes of [off, off + m->len) as the extent m describes them. */
static int rebuild(struct img *img, const struct img_map *m, uint64_t off,
		   uint8_t *dst)
{
	struct img_io *io = m->io ? m->io : img_file(img);
	int ret;

	if (!(m->flags & IMG_EXT_ALLOCATED)) {
		if (!img->backing) {
			memset(dst, 0, m->len);
			return 0;
		}
		return img_read(img->backing, dst, off, m->len);
	}
	if (m->flags & IMG_EXT_ZERO) {
		memset(dst, 0, m->len);
		return 0;
	}
	if (m->flags & IMG_EXT_COMPRESSED) {
		uint8_t *in = malloc(m->clen), *out = malloc(m->cluster_size);

		ret = in && out ? 0 : -ENOMEM;
		if (ret == 0)
			ret = img_io_pread(io, in, m->clen, m->file_off);
		if (ret == 0)
			ret = img_decompress(m->codec, in, m->clen, out,
					     m->cluster_size);
		if (ret == 0 && m->in_cluster + m->len > m->cluster_size)
			ret = -ERANGE;
		if (ret == 0)
			memcpy(dst, out + m->in_cluster, m->len);
		free(in);
		free(out);
		return ret;
	}
	if (!(m->flags & IMG_EXT_DATA) || !(m->flags & IMG_EXT_OFFSET_VALID))
		return -EINVAL;
	ret = img_io_pread(io, dst, m->len, m->file_off);
	if (ret == 0 && (m->flags & IMG_EXT_ENCRYPTED))
		ret = img_cipher_run(m->cipher, false, dst, dst, m->len,
				     m->file_off, off);
	return ret;
}

/* What block status reports for the layer: .map's flags, without the
 * transform and its host offset for encrypted data. */
static unsigned status_flags(unsigned map_flags)
{
	if (map_flags & IMG_EXT_ENCRYPTED)
		return map_flags & ~(IMG_EXT_ENCRYPTED | IMG_EXT_OFFSET_VALID);
	return map_flags;
}

struct tally {
	unsigned extents, compressed, encrypted, zero, data, unallocated,
		mid_cluster;
};

/* Walk .map over the disk in requests of step bytes (0: the rest of the
 * disk) from start, rebuilding into buf; 0 or the number of failures. */
static int walk(struct img *img, uint64_t start, uint64_t step, uint8_t *buf,
		struct tally *t)
{
	uint64_t size = img_size(img), off = start;
	int bad = 0;

	while (off < size) {
		uint64_t want = step ? img_min(step, size - off) : size - off;
		struct img_extent ext;
		struct img_map m = { .write = IMG_MAP_NO_WRITE };
		int ret = qcow2_map(img, off, want, &m);

		if (ret < 0 || m.len == 0 || m.len > want) {
			fprintf(stderr,
				"map at %#" PRIx64 ": %d len %" PRIu64 ": %s\n",
				off, ret, ret < 0 ? 0 : m.len,
				img_last_error());
			return bad + 1;
		}
		ret = rebuild(img, &m, off, buf + off);
		if (ret < 0) {
			fprintf(stderr,
				"rebuild at %#" PRIx64 " flags %#x: %d: %s\n",
				off, m.flags, ret, img_last_error());
			bad++;
		}
		ret = img_block_status(img, off, m.len, IMG_BS_NO_CHAIN, &ext);
		if (ret < 0 || ext.len != m.len ||
		    ext.flags != status_flags(m.flags) ||
		    ((ext.flags & IMG_EXT_OFFSET_VALID) &&
		     ext.file_off != m.file_off)) {
			fprintf(stderr,
				"at %#" PRIx64 ": map len %" PRIu64
				" flags %#x, block status %d len %" PRIu64
				" flags %#x\n",
				off, m.len, m.flags, ret, ext.len, ext.flags);
			bad++;
		}
		t->extents++;
		t->compressed += !!(m.flags & IMG_EXT_COMPRESSED);
		t->encrypted += !!(m.flags & IMG_EXT_ENCRYPTED);
		t->zero += !!(m.flags & IMG_EXT_ZERO);
		t->data += (m.flags & (IMG_EXT_DATA | IMG_EXT_ZERO)) ==
			   IMG_EXT_DATA;
		t->unallocated += !(m.flags & IMG_EXT_ALLOCATED);
		t->mid_cluster += (m.flags & IMG_EXT_COMPRESSED) &&
				  m.in_cluster != 0;
		off += m.len;
	}
	return bad;
}

static uint8_t *read_file(const char *path, uint64_t len)
{
	uint8_t *buf = calloc(1, len);
	FILE *f = fopen(path, "rb");

	if (buf && f && fread(buf, 1, len, f) != len) {
		free(buf);
		buf = NULL;
	}
	if (f)
		fclose(f);
	return buf;
}

/*
 * Open path (secret: LUKS), compare what .map rebuilds with the raw file
 * qemu-img converted it to, and return the tally of the whole-disk pass.
 */
static struct tally check_image(const char *name, const char *path,
				const char *raw, bool secret)
{
	struct img_open_opts o = { .flags = IMG_OPEN_RDONLY };
	struct img_secret *sec = NULL;
	struct tally t = { 0 }, t2 = { 0 };
	uint8_t *want = read_file(raw, DISK), *buf = calloc(1, DISK);
	struct img *img = NULL;
	static const uint64_t steps[][2] = { { 0, 0 },
					     { 0, 7 * 4096 + 512 },
					     { 512, 3 * 4096 + 1024 },
					     { 0, 2048 } };

	test_note("%s", name);
	CHECK(want && buf);
	if (secret)
		CHECK_OK(img_secret_new(PASS, strlen(PASS), &sec));
	o.secret = sec;
	CHECK_OK(img_open(path, &o, &img));
	if (!img || !want || !buf)
		goto out;
	CHECK_EQ(img_size(img), DISK);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(steps); i++) {
		uint64_t start = steps[i][0];

		memset(buf, 0xa5, DISK);
		if (start)
			CHECK_OK(img_read(img, buf, 0, start));
		CHECK_EQ(walk(img, start, steps[i][1], buf, i ? &t2 : &t), 0);
		if (memcmp(buf, want, DISK)) {
			uint64_t k = 0;

			while (buf[k] == want[k])
				k++;
			fprintf(stderr,
				"%s: step %" PRIu64 ": rebuilt bytes differ "
				"from qemu-img convert at %#" PRIx64 "\n",
				name, steps[i][1], k);
			CHECK(!"rebuilt image equals qemu-img convert");
		}
	}
	/* Requests starting inside compressed clusters did happen. */
	if (t.compressed)
		CHECK(t2.mid_cluster > 0);
out:
	img_close(img);
	img_secret_free(sec);
	free(want);
	free(buf);
	return t;
}

static int sh(const char *cmd)
{
	return test_sh("cd '%s' && (%s) >/dev/null 2>log", test_tmpdir(), cmd);
}

/* Text that compresses to a few sectors a cluster, at [off_k, +len_k) KiB
 * of f. */
static void put_text(const char *f, unsigned off_k, unsigned len_k)
{
	CHECK_EQ(test_sh("cd '%s' && head -c %uk /dev/urandom | base64 -w0 | "
			 "head -c %uk | dd of=%s bs=1k seek=%u conv=notrunc "
			 "status=none",
			 test_tmpdir(), len_k, len_k, f, off_k),
		 0);
}

/* Run the shell commands that make an image and its raw conversion. */
static void make(const char *cmd)
{
	int ret = sh(cmd);

	CHECK_EQ(ret, 0);
	if (ret)
		(void)test_sh("cat '%s/log' >&2", test_tmpdir());
}

static void test_compressed(const char *codec)
{
	char cmd[1024];
	struct tally t;

	CHECK_EQ(sh("rm -f c.raw c.qcow2 c.out; truncate -s 4M c.raw"), 0);
	put_text("c.raw", 0, 200);
	put_text("c.raw", 1024, 64);
	put_text("c.raw", 3000, 70);
	snprintf(cmd, sizeof(cmd),
		 "qemu-img convert -c -f raw -O qcow2 -o compression_type=%s "
		 "c.raw c.qcow2 && qemu-io -f qcow2 -c 'write -P 0x5c 64k 4k' "
		 "-c 'write -z 2M 64k' c.qcow2 && "
		 "qemu-img convert -O raw c.qcow2 c.out",
		 codec);
	make(cmd);
	t = check_image(codec, test_path("c.qcow2"), test_path("c.out"), false);
	CHECK(t.compressed > 0);
	CHECK(t.data > t.compressed);
}

static void test_zero_clusters(void)
{
	struct tally t;

	make("rm -f z.qcow2; qemu-img create -q -f qcow2 z.qcow2 4M && "
	     "qemu-io -f qcow2 -c 'write -P 0x41 0 1M' "
	     "-c 'write -z 128k 128k' -c 'write -z -u 512k 64k' "
	     "-c 'write -z 2M 64k' z.qcow2 && "
	     "qemu-img convert -O raw z.qcow2 z.out");
	t = check_image("zero clusters", test_path("z.qcow2"),
			test_path("z.out"), false);
	CHECK(t.zero >= 3);
	CHECK(t.unallocated > 0);
}

static void test_prealloc(void)
{
	struct tally t;

	make("rm -f p.qcow2; qemu-img create -q -f qcow2 "
	     "-o preallocation=metadata p.qcow2 4M && "
	     "qemu-io -f qcow2 -c 'write -P 0x51 64k 100k' "
	     "-c 'write -z 1M 64k' -c 'write -P 0x52 3M 4k' p.qcow2 && "
	     "qemu-img convert -O raw p.qcow2 p.out");
	t = check_image("metadata preallocation", test_path("p.qcow2"),
			test_path("p.out"), false);
	/* Preallocated holes read as zeroes: data and zero extents. */
	CHECK(t.data > 0);
	CHECK(t.zero > 0);
	CHECK_EQ(t.unallocated, 0);
}

static void test_extended_l2(void)
{
	struct tally t;

	make("rm -f xb.qcow2 x.qcow2; "
	     "qemu-img create -q -f qcow2 xb.qcow2 4M && "
	     "qemu-io -f qcow2 -c 'write -P 0x61 0 4M' xb.qcow2 && "
	     "qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k "
	     "-b xb.qcow2 -F qcow2 x.qcow2 && "
	     "qemu-io -f qcow2 -c 'write -P 0x62 2k 2k' "
	     "-c 'write -P 0x63 70k 5k' -c 'write -z 128k 4k' "
	     "-c 'write -z -u 256k 64k' -c 'write -P 0x64 300k 64k' "
	     "-c 'write -P 0x65 1M 1k' x.qcow2 && "
	     "qemu-img convert -O raw x.qcow2 x.out");
	t = check_image("extended L2", test_path("x.qcow2"), test_path("x.out"),
			false);
	CHECK(t.unallocated > 0);
	CHECK(t.zero > 0);
	CHECK(t.data > 0);
}

static void test_luks(void)
{
	char cmd[2048];
	const char *io = "--image-opts "
			 "driver=qcow2,file.filename=l.qcow2,"
			 "encrypt.key-secret=sec0";
	struct tally t;
	int tries = 0, ret;

	/* qemu-img 7.2 fails now and then calibrating PBKDF2: retry. */
	do {
		snprintf(cmd, sizeof(cmd),
			 "rm -f l.qcow2; qemu-img create -q -f qcow2 %s "
			 "-o encrypt.format=luks,encrypt.key-secret=sec0,"
			 "encrypt.iter-time=10 l.qcow2 4M",
			 secret_obj);
		ret = sh(cmd);
	} while (ret != 0 && ++tries < 8);
	CHECK_EQ(ret, 0);
	snprintf(cmd, sizeof(cmd),
		 "qemu-io %s %s -c 'write -P 0x71 0 100k' "
		 "-c 'write -P 0x72 1M 8k' -c 'write -z 2M 64k' && "
		 "qemu-img convert %s %s -O raw l.out",
		 secret_obj, io, secret_obj, io);
	make(cmd);
	t = check_image("LUKS", test_path("l.qcow2"), test_path("l.out"), true);
	CHECK(t.encrypted > 0);
}

static void test_data_file(void)
{
	struct tally t;

	make("rm -f d.qcow2 d.data; qemu-img create -q -f qcow2 "
	     "-o data_file=d.data d.qcow2 4M && "
	     "qemu-io -f qcow2 -c 'write -P 0x81 0 300k' "
	     "-c 'write -P 0x82 2M 64k' -c 'write -z 1M 64k' d.qcow2 && "
	     "qemu-img convert -O raw d.qcow2 d.out");
	t = check_image("data file", test_path("d.qcow2"), test_path("d.out"),
			false);
	CHECK(t.data > 0);
}

static void test_backing(void)
{
	struct tally t;

	make("rm -f bb.qcow2 b.qcow2; "
	     "qemu-img create -q -f qcow2 -o compat=0.10 bb.qcow2 4M && "
	     "qemu-io -f qcow2 -c 'write -P 0x91 0 3M' bb.qcow2 && "
	     "qemu-img create -q -f qcow2 -o cluster_size=4k "
	     "-b bb.qcow2 -F qcow2 b.qcow2 && "
	     "qemu-io -f qcow2 -c 'write -P 0x92 10k 6k' "
	     "-c 'write -P 0x93 2044k 8k' -c 'write -z 3000k 12k' b.qcow2 && "
	     "qemu-img convert -O raw b.qcow2 b.out");
	t = check_image("backing", test_path("b.qcow2"), test_path("b.out"),
			false);
	CHECK(t.unallocated > 0);
	CHECK(t.data > 0);
}

int main(void)
{
	if (!qt_have_qcow2())
		test_skip("no qcow2 driver in this build");
	if (!qt_have_qemu_img() ||
	    system("command -v qemu-io >/dev/null 2>&1") != 0)
		test_skip("qemu-img and qemu-io are needed");
	test_compressed("zlib");
	test_compressed("zstd");
	test_zero_clusters();
	test_prealloc();
	test_extended_l2();
	test_luks();
	test_data_file();
	test_backing();
	return test_done();
}
