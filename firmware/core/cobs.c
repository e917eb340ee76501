#include "cobs.h"

void cobs_decoder_init(cobs_decoder *d, uint8_t *out, size_t capacity)
{
    d->out = out;
    d->capacity = capacity;
    cobs_decoder_reset(d);
}

void cobs_decoder_reset(cobs_decoder *d)
{
    d->length = 0;
    d->remaining = 0;
    d->zero_pending = false;
    d->failed = false;
}

static void emit(cobs_decoder *d, uint8_t byte)
{
    if (d->length == d->capacity) {
        d->failed = true;
        return;
    }
    d->out[d->length++] = byte;
}

void cobs_decoder_put(cobs_decoder *d, uint8_t byte)
{
    if (d->failed)
        return;
    if (d->remaining == 0) {
        if (d->zero_pending)
            emit(d, 0);
        d->remaining = (uint8_t)(byte - 1);
        d->zero_pending = byte != 0xFF;
    } else {
        emit(d, byte);
        d->remaining--;
    }
}

bool cobs_decoder_done(const cobs_decoder *d)
{
    return !d->failed && d->remaining == 0;
}

void cobs_encoder_init(cobs_encoder *e, cobs_sink sink)
{
    e->sink = sink;
    e->code = 1;
    e->just_flushed_full = false;
}

static void flush(cobs_encoder *e)
{
    e->block[0] = e->code;
    e->sink(e->block, e->code);
    e->code = 1;
}

void cobs_encoder_put(cobs_encoder *e, const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        e->just_flushed_full = false;
        if (data[i] == 0) {
            flush(e);
            continue;
        }
        e->block[e->code++] = data[i];
        if (e->code == 0xFF) {
            flush(e);
            e->just_flushed_full = true;
        }
    }
}

void cobs_encoder_finish(cobs_encoder *e)
{
    static const uint8_t delimiter = 0;
    /* A frame ending exactly on a full block needs no empty final block (as Python's cobs). */
    if (!e->just_flushed_full)
        flush(e);
    e->sink(&delimiter, 1);
    e->code = 1;
    e->just_flushed_full = false;
}
