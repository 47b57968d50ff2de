/* SPDX-License-Identifier: MIT */
/*
 * The table of format drivers. Probing asks every driver and the highest
 * score wins, so the order only breaks ties; raw (score 1) comes last.
 */
#include "img-driver.h"

extern const struct img_driver qcow2_driver;
extern const struct img_driver raw_driver;
extern const struct img_driver vhdx_driver;
extern const struct img_driver vmdk_driver;
extern const struct img_driver vdi_driver;
extern const struct img_driver vpc_driver;

const struct img_driver *const img_format_table[] = {
	&qcow2_driver, &vpc_driver, &vdi_driver, &vmdk_driver,
	&vhdx_driver,  &raw_driver, NULL,
};
