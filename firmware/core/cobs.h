/* COBS framing of firmware_protocol.md section 2, streaming in both directions so that no
 * whole encoded frame is ever held in RAM. */
#ifndef HIL_COBS_H
#define HIL_COBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decoder: feeds encoded bytes (no delimiters) into a caller-owned buffer. */
typedef struct {
    uint8_t *out;
    size_t capacity;
    size_t length;     /* decoded bytes so far */
    uint8_t remaining; /* data bytes left in the current block; 0: next byte is a code */
    bool zero_pending; /* the current block ends with an implicit 0x00 */
    bool failed;       /* overflow: drop everything up to the next delimiter */
} cobs_decoder;

void cobs_decoder_init(cobs_decoder *d, uint8_t *out, size_t capacity);
/* Start a new frame (after a delimiter). */
void cobs_decoder_reset(cobs_decoder *d);
/* Take one encoded, non-zero byte. */
void cobs_decoder_put(cobs_decoder *d, uint8_t byte);
/* At a delimiter: true if the bytes since the last one decoded to a complete frame. */
bool cobs_decoder_done(const cobs_decoder *d);

/* Encoder: writes encoded bytes through `sink` one block (at most 255 bytes) at a time. */
typedef void (*cobs_sink)(const uint8_t *data, size_t n);

typedef struct {
    cobs_sink sink;
    uint8_t block[255];
    uint8_t code; /* index of the next free byte in block; block[0] holds the code */
    bool just_flushed_full;
} cobs_encoder;

void cobs_encoder_init(cobs_encoder *e, cobs_sink sink);
void cobs_encoder_put(cobs_encoder *e, const uint8_t *data, size_t n);
/* Flush the last block and write the 0x00 delimiter. */
void cobs_encoder_finish(cobs_encoder *e);

#endif
