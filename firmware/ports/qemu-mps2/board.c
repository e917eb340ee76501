/* Board support for QEMU's mps2-an385 (Cortex-M3, 25 MHz): UART0 of the CMSDK APB peripherals
 * carries the host link, SysTick keeps the clock. `make qemu` builds it; `hil firmware run-qemu`
 * boots it with the UART on a pseudo-terminal. */
#include <stdint.h>

#include "../../core/board.h"
#include "../../core/device.h"
#include "../../core/network.h"

#define SYSCLK_HZ 25000000u

/* CMSDK APB UART0 */
#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00))
#define UART_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04))
#define UART_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10))
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u
#define CTRL_TX_EN 1u
#define CTRL_RX_EN 2u

/* SysTick, 1 kHz */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define TICKS_PER_MS (SYSCLK_HZ / 1000u)

static volatile uint32_t milliseconds;

void SysTick_Handler(void) { milliseconds++; }

uint32_t board_micros(void)
{
    uint32_t ms, ticks;
    do {
        ms = milliseconds;
        ticks = SYST_CVR;
    } while (ms != milliseconds);
    return ms * 1000u + (TICKS_PER_MS - 1u - ticks) / (TICKS_PER_MS / 1000u);
}

/* Polled: QEMU's UART holds the next byte until this one is read, and the pty holds the rest, so
 * nothing is lost while the core computes. (A real UART without flow control needs an interrupt
 * filling a ring buffer; USB CDC, as on ports/rp2040, buffers and flow-controls by itself.)
 * Polling also moves about 1.5x the bytes per second of an interrupt per byte under QEMU. */
size_t board_read(uint8_t *buf, size_t max)
{
    size_t n = 0;
    while (n < max && (UART_STATE & STATE_RX_FULL))
        buf[n++] = (uint8_t)UART_DATA;
    return n;
}

void board_write(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        while (UART_STATE & STATE_TX_FULL)
            ;
        UART_DATA = data[i];
    }
}

const char *board_identity(void) { return "hil reference firmware digits " NET_NAME " (qemu mps2-an385)"; }

int main(void)
{
    UART_BAUDDIV = SYSCLK_HZ / 115200u;
    UART_CTRL = CTRL_TX_EN | CTRL_RX_EN;
    SYST_RVR = TICKS_PER_MS - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
    hil_device_init();
    for (;;)
        hil_device_poll();
}
