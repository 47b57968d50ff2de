/* SPDX-License-Identifier: MIT */
/*
 * The compressed-write pipeline of img convert -c (convert-compress.c): the
 * convert loop hands it data ranges in target order; compressor threads (one
 * per core by default) compress whole clusters in parallel and one writer
 * thread stores them in order with img_write_compressed, so the target's
 * compressed data is packed back to back as qemu-img convert -c packs it.
 */
#ifndef IMG_CONVERT_COMPRESS_H
#define IMG_CONVERT_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "img.h"

struct cvc;

/*
 * Start a pipeline writing to dst with compression level level (0: the
 * codec's default) on nthreads compressor threads (0: one per online CPU).
 * Fails (with a message) if dst cannot store compressed clusters.
 */
int cvc_new(struct img *dst, int level, unsigned nthreads, struct cvc **out);
/* The target cluster size: ranges given to cvc_write should be whole
 * clusters (others are stored uncompressed). */
uint64_t cvc_cluster_size(const struct cvc *c);
/*
 * Queue len bytes at target offset off (copied; blocks while the pipeline is
 * full). Returns the pipeline's first error so far, with its message.
 */
int cvc_write(struct cvc *c, const void *buf, uint64_t off, uint64_t len);
/* Wait until everything queued is written; the first error, if any. */
int cvc_finish(struct cvc *c);
/* " - compressed to 31.2%" so far (for the -p line). */
void cvc_ratio(struct cvc *c, char *buf, size_t buf_size);
/* Stop the threads (dropping what is queued) and free. NULL is a no-op. */
void cvc_free(struct cvc *c);
/*
 * Take compression_level out of the -o list (qemu-img has no such option;
 * the qcow2 driver would refuse it) into *level. -1 with a message when the
 * value is bad or the options ask for encryption too.
 */
int cvc_take_opts(struct img_kv *kv, size_t *n, int *level);

#endif
