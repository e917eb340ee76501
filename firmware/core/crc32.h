/* CRC-32 of firmware_protocol.md section 2 (IEEE 802.3 / zlib). */
#ifndef HIL_CRC32_H
#define HIL_CRC32_H

#include <stddef.h>
#include <stdint.h>

#define CRC32_INIT 0xFFFFFFFFu

/* Continue a CRC over more bytes: start from CRC32_INIT, finish with crc32_final. */
uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t n);

static inline uint32_t crc32_final(uint32_t crc) { return crc ^ 0xFFFFFFFFu; }

#endif
