/* SPDX-License-Identifier: MIT */
/*
 * Cloud presets for img convert (--profile azure|esxi|hyperv): the target
 * format, creation options and size rule each cloud's importer expects.
 */
#ifndef CONVERT_PROFILE_H
#define CONVERT_PROFILE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Apply profile name: set *fmt (an explicit -O must agree) and prepend the
 * profile's options to *options (the user's -o comes last, so it wins).
 * Returns 0, or -1 after printing the error.
 */
int cv_profile_apply(const char *name, const char **fmt, const char **options);
/* The target size for a source of size bytes under profile name (NULL: size
 * itself); prints a note when the profile changes it, unless quiet. */
uint64_t cv_profile_size(const char *name, uint64_t size, bool quiet);

#endif
