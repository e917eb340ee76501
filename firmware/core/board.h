/* What a board provides to the core: byte I/O on the host link, a clock, an identity.
 * ports/qemu-mps2 implements it on a CMSDK UART; ports/rp2040 shows a USB CDC board. The array
 * hooks are in array.h. */
#ifndef HIL_BOARD_H
#define HIL_BOARD_H

#include <stddef.h>
#include <stdint.h>

/* Copy up to `max` received bytes into `buf` without waiting; returns how many. */
size_t board_read(uint8_t *buf, size_t max);
/* Send bytes to the host, waiting until the link has taken them all. */
void board_write(const uint8_t *data, size_t n);
/* A free-running microsecond counter (wraps after 2^32 us). */
uint32_t board_micros(void);
/* Who the device is, for HELLO and INFO, e.g. "acme rram-chip rev B s/n 0042". */
const char *board_identity(void);

#endif
