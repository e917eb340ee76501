/* Skeleton of a real board: Raspberry Pi RP2040 with the host link on USB CDC (pico-sdk and its
 * bundled TinyUSB). Build it with the pico-sdk (CMakeLists.txt next to this file); CI does not,
 * since the SDK is not a Debian package. It shows exactly what a board adds to the core: the
 * four board.h functions and main. Until array_digital.c is replaced by drivers for the board's
 * DACs and ADCs (array.h), the digital stand-in answers forwards, as under QEMU. */
#include <stddef.h>
#include <stdint.h>

#include "pico/stdlib.h"
#include "pico/unique_id.h"
#include "tusb.h"

#include "../../core/board.h"
#include "../../core/device.h"

/* USB CDC buffers and flow-controls on its own: bytes the core has not read yet stay with the
 * host, so no ring buffer is needed here. */
size_t board_read(uint8_t *buf, size_t max)
{
    tud_task();
    if (!tud_cdc_connected() || !tud_cdc_available())
        return 0;
    return tud_cdc_read(buf, (uint32_t)max);
}

void board_write(const uint8_t *data, size_t n)
{
    while (n) {
        tud_task();
        uint32_t taken = tud_cdc_write(data, (uint32_t)n);
        data += taken;
        n -= taken;
        if (n || tud_cdc_write_available() < 64)
            tud_cdc_write_flush();
    }
    tud_cdc_write_flush();
}

uint32_t board_micros(void) { return time_us_32(); }

const char *board_identity(void)
{
    /* Maker, chip, revision and the flash's unique id as serial number. */
    static char identity[64] = "hil rp2040 digital-array rev A s/n ";
    static int done;
    if (!done) {
        size_t at = 0;
        while (identity[at])
            at++;
        pico_get_unique_board_id_string(identity + at, (uint)(sizeof identity - at));
        done = 1;
    }
    return identity;
}

int main(void)
{
    tusb_init();
    hil_device_init();
    for (;;)
        hil_device_poll();
}
