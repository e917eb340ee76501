/* The device side of firmware_protocol.md: frames in, replies out, through board.h and array.h.
 *
 * A port calls hil_device_init() once at power-up, then hil_device_poll() forever (or hands the
 * bytes it received to hil_device_feed() itself); replies go out through board_write(). Everything is
 * statically allocated; sizes come from network.h. */
#ifndef HIL_DEVICE_H
#define HIL_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#define HIL_PROTOCOL_VERSION 1
#define HIL_FIRMWARE_VERSION "hil-firmware 1.0"

/* Power-up state: no inputs, no staged parameters, empty error queue, counters at zero. */
void hil_device_init(void);

/* Take bytes from the link; every frame they complete is answered before this returns. */
void hil_device_feed(const uint8_t *data, size_t n);

/* Read what board_read() has and feed it: a board's main loop calls this forever. */
void hil_device_poll(void);

#endif
