/* SPDX-License-Identifier: MIT */
/*
 * Cloud presets for img convert: azure takes a fixed VHD whose size is a
 * whole number of MiB (the size is rounded up, with a note), with the exact
 * size in the footer rather than a CHS rounding; esxi takes a
 * streamOptimized VMDK (VMware's stream layout, lsilogic adapter); hyperv
 * takes a dynamic VHDX.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "convert-profile.h"

#define MIB (1ull << 20)

struct cv_profile {
	const char *name;
	const char *fmt;
	const char *options;
	bool whole_mib;
};

static const struct cv_profile cv_profiles[] = {
	{ "azure", "vpc", "subformat=fixed,force_size=on", true },
	{ "esxi", "vmdk", "subformat=streamOptimized,adapter_type=lsilogic",
	  false },
	{ "hyperv", "vhdx", "subformat=dynamic", false },
};

static const struct cv_profile *cv_profile_find(const char *name)
{
	for (size_t i = 0; i < sizeof(cv_profiles) / sizeof(cv_profiles[0]);
	     i++)
		if (!strcmp(cv_profiles[i].name, name))
			return &cv_profiles[i];
	return NULL;
}

int cv_profile_apply(const char *name, const char **fmt, const char **options)
{
	static char merged[4096];
	const struct cv_profile *p = cv_profile_find(name);

	if (!p)
		return cli_fail(
			-1,
			"convert: unknown profile '%s' (azure, esxi, hyperv)",
			name);
	if (*fmt && strcmp(*fmt, p->fmt))
		return cli_fail(-1, "convert: profile '%s' writes %s, not %s",
				name, p->fmt, *fmt);
	*fmt = p->fmt;
	if (!*options) {
		*options = p->options;
		return 0;
	}
	if ((size_t)snprintf(merged, sizeof(merged), "%s,%s", p->options,
			     *options) >= sizeof(merged))
		return cli_fail(-1, "convert: -o options too long");
	*options = merged;
	return 0;
}

uint64_t cv_profile_size(const char *name, uint64_t size, bool quiet)
{
	const struct cv_profile *p = name ? cv_profile_find(name) : NULL;
	uint64_t rounded;

	if (!p || !p->whole_mib || size % MIB == 0 || size > UINT64_MAX - MIB)
		return size;
	rounded = (size + MIB - 1) / MIB * MIB;
	if (!quiet)
		printf("%s: size %" PRIu64 " rounded up to %" PRIu64
		       " (a whole MiB)\n",
		       name, size, rounded);
	return rounded;
}
