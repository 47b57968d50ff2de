/* SPDX-License-Identifier: MIT */
/*
 * The calling thread's last error message: img_error() records a formatted
 * one-line message and returns its error code, img_last_error() reads it back.
 * Messages may quote the previous message (wrapping a lower-level reason), so
 * formatting goes through a scratch buffer before replacing the stored one.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "img.h"

#define IMG_ERROR_MAX 1024

static _Thread_local char last_error[IMG_ERROR_MAX];

int img_error(int err, const char *fmt, ...)
{
	char tmp[IMG_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(last_error, tmp, sizeof(tmp));
	return err;
}

const char *img_last_error(void)
{
	return last_error;
}

void img_clear_error(void)
{
	last_error[0] = '\0';
}
