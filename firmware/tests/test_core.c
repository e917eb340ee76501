/* Native unit tests of the portable core: the protocol document's test vectors, codec round trips,
 * malformed and corrupted frames, status codes and the arithmetic of the array stand-in.
 * Built with AddressSanitizer and UBSan by `make check`; exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/board.h"
#include "../core/cobs.h"
#include "../core/crc32.h"
#include "../core/device.h"
#include "../core/directions.h"
#include "../core/network.h"

static int failures, checks;
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        checks++;                                                                            \
        if (!(cond)) {                                                                       \
            failures++;                                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                                    \
    } while (0)

static const unsigned GAIN_SHIFTS[NET_LAYERS] = NET_GAIN_SHIFTS;

/* ---- the board: replies are captured ----------------------------------------------------- */

static uint8_t wire[1 << 21];
static size_t wire_len;

size_t board_read(uint8_t *buf, size_t max)
{
    (void)buf;
    (void)max;
    return 0;
}

void board_write(const uint8_t *data, size_t n)
{
    if (wire_len + n > sizeof wire)
        abort();
    memcpy(wire + wire_len, data, n);
    wire_len += n;
}

uint32_t board_micros(void)
{
    static uint32_t now;
    return now += 10;
}

const char *board_identity(void) { return "test \"board\""; }

/* ---- the array: rows programmed are counted (linked with --wrap=array_program_row) ----------- */

void __real_array_program_row(unsigned layer, unsigned row, const int16_t *cells);
void __wrap_array_program_row(unsigned layer, unsigned row, const int16_t *cells);

static unsigned long rows_programmed;

void __wrap_array_program_row(unsigned layer, unsigned row, const int16_t *cells)
{
    rows_programmed++;
    __real_array_program_row(layer, row, cells);
}

/* ---- reference COBS (the textbook, non-streaming form) to check the core against ----------- */

static size_t ref_cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
            continue;
        }
        out[o++] = in[i];
        if (++code == 0xFF) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
            if (i + 1 == n)
                return o - 1; /* ends on a full block: no empty final block */
        }
    }
    out[code_at] = code;
    return o;
}

static uint8_t encoded[1 << 21];
static size_t encoded_len;

static void capture(const uint8_t *data, size_t n)
{
    memcpy(encoded + encoded_len, data, n);
    encoded_len += n;
}

/* ---- requests and replies ------------------------------------------------------------------ */

typedef struct {
    uint8_t type;
    uint16_t id, status;
    uint8_t *payload;
    uint32_t length;
} reply;

static uint8_t decoded[1 << 21];

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t u32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float f32_at(const uint8_t *p)
{
    uint32_t bits = u32_at(p);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Header, payload and CRC of a request (unencoded); returns its size. */
static size_t frame_body(uint8_t *body, uint8_t version, uint8_t type, uint16_t id, const void *payload,
                         uint32_t n)
{
    body[0] = version;
    body[1] = type;
    body[2] = (uint8_t)id;
    body[3] = (uint8_t)(id >> 8);
    memset(body + 4, 0, 4);
    put_u32(body + 8, n);
    memcpy(body + 12, payload, n);
    put_u32(body + 12 + n, crc32_final(crc32_update(CRC32_INIT, body, 12 + n)));
    return 16 + n;
}

static uint8_t body[1 << 16], stream[1 << 17];

/* Feed raw bytes; return the number of reply frames sent and the last one decoded in `r`. */
static int feed_raw(const uint8_t *bytes, size_t n, reply *r)
{
    wire_len = 0;
    hil_device_feed(bytes, n);
    int frames = 0;
    size_t start = 0;
    for (size_t i = 0; i < wire_len; i++) {
        if (wire[i] != 0)
            continue;
        cobs_decoder d;
        cobs_decoder_init(&d, decoded, sizeof decoded);
        for (size_t k = start; k < i; k++)
            cobs_decoder_put(&d, wire[k]);
        CHECK(cobs_decoder_done(&d) && d.length >= 16);
        CHECK(crc32_final(crc32_update(CRC32_INIT, decoded, d.length - 4)) == u32_at(decoded + d.length - 4));
        r->type = decoded[1];
        r->id = (uint16_t)(decoded[2] | decoded[3] << 8);
        r->status = (uint16_t)(decoded[4] | decoded[5] << 8);
        r->length = u32_at(decoded + 8);
        CHECK(r->length == d.length - 16);
        r->payload = decoded + 12;
        frames++;
        start = i + 1;
    }
    return frames;
}

static uint16_t next_id;

static reply request(uint8_t type, const void *payload, uint32_t n)
{
    size_t size = frame_body(body, 1, type, ++next_id, payload, n);
    size_t len = ref_cobs_encode(body, size, stream);
    stream[len++] = 0;
    reply r = {0};
    CHECK(feed_raw(stream, len, &r) == 1);
    CHECK(r.type == (type | 0x80) && r.id == next_id);
    return r;
}

static void set_params(uint8_t layer, uint8_t index, uint32_t offset, const float *v, uint32_t count,
                       unsigned expect)
{
    static uint8_t p[8 + 4 * 1024];
    p[0] = layer;
    p[1] = index;
    p[2] = p[3] = 0;
    put_u32(p + 4, offset);
    memcpy(p + 8, v, 4 * count);
    CHECK(request(0x03, p, 8 + 4 * count).status == expect);
}

static void set_input(uint8_t layer, uint32_t batch, uint32_t offset, const float *v, uint32_t count,
                      unsigned expect)
{
    static uint8_t p[12 + 4 * 1024];
    memset(p, 0, 12);
    p[0] = layer;
    put_u32(p + 4, batch);
    put_u32(p + 8, offset);
    memcpy(p + 12, v, 4 * count);
    CHECK(request(0x04, p, 12 + 4 * count).status == expect);
}

static reply perturbed(uint8_t layer, uint8_t dist, uint8_t signs, double eps, uint32_t chunk,
                       const uint32_t *seeds, uint16_t count)
{
    static uint8_t p[20 + 4 * 64];
    memset(p, 0, 20);
    p[0] = layer;
    p[1] = dist;
    p[2] = signs;
    memcpy(p + 4, &eps, 8);
    put_u32(p + 12, chunk);
    p[16] = (uint8_t)count;
    p[17] = (uint8_t)(count >> 8);
    for (unsigned k = 0; k < count; k++)
        put_u32(p + 20 + 4 * k, seeds[k]);
    return request(0x06, p, 20 + 4 * count);
}

/* STATUS's count of parameter writes (array programmings). */
static uint64_t param_writes(void)
{
    reply r = request(0x07, "", 0);
    CHECK(r.status == 0 && r.length == 56);
    return (uint64_t)u32_at(r.payload + 16) | (uint64_t)u32_at(r.payload + 20) << 32;
}

static int32_t pop_error(char *text)
{
    reply r = request(0x08, "", 0);
    CHECK(r.status == 0 && r.length >= 4);
    memcpy(text, r.payload + 4, r.length - 4);
    text[r.length - 4] = 0;
    return (int32_t)u32_at(r.payload);
}

/* ---- tests --------------------------------------------------------------------------------- */

static void test_crc_check_value(void)
{
    CHECK(crc32_final(crc32_update(CRC32_INIT, (const uint8_t *)"123456789", 9)) == 0xCBF43926u);
}

static void check_cobs(const uint8_t *in, size_t n, const uint8_t *expect, size_t expect_n)
{
    cobs_encoder e;
    cobs_encoder_init(&e, capture);
    encoded_len = 0;
    cobs_encoder_put(&e, in, n);
    cobs_encoder_finish(&e);
    CHECK(encoded_len == expect_n + 1 && memcmp(encoded, expect, expect_n) == 0 && encoded[expect_n] == 0);
}

static void test_cobs_vectors_and_round_trips(void)
{
    check_cobs((const uint8_t[]){0x00}, 1, (const uint8_t[]){0x01, 0x01}, 2);
    check_cobs((const uint8_t[]){0x00, 0x00}, 2, (const uint8_t[]){0x01, 0x01, 0x01}, 3);
    check_cobs((const uint8_t[]){0x11, 0x22, 0x00, 0x33}, 4, (const uint8_t[]){0x03, 0x11, 0x22, 0x02, 0x33}, 5);
    check_cobs((const uint8_t[]){0x11, 0x00, 0x00, 0x00}, 4, (const uint8_t[]){0x02, 0x11, 0x01, 0x01, 0x01}, 5);
    uint8_t run[255], expect[257];
    for (int i = 0; i < 254; i++)
        run[i] = (uint8_t)(i + 1);
    expect[0] = 0xFF;
    memcpy(expect + 1, run, 254);
    check_cobs(run, 254, expect, 255); /* a full block ends the frame: no trailing 0x01 */
    srand(7);
    static uint8_t in[2000], out[2000];
    for (int trial = 0; trial < 400; trial++) {
        size_t n = (size_t)(rand() % 1200);
        int zeros = rand() % 4;
        for (size_t i = 0; i < n; i++)
            in[i] = zeros && rand() % (zeros * 40) == 0 ? 0 : (uint8_t)(1 + rand() % 255);
        cobs_encoder e;
        cobs_encoder_init(&e, capture);
        encoded_len = 0;
        cobs_encoder_put(&e, in, n);
        cobs_encoder_finish(&e);
        size_t ref = ref_cobs_encode(in, n, stream);
        CHECK(encoded_len == ref + 1 && memcmp(encoded, stream, ref) == 0);
        cobs_decoder d;
        cobs_decoder_init(&d, out, sizeof out);
        for (size_t i = 0; i + 1 < encoded_len; i++)
            cobs_decoder_put(&d, encoded[i]);
        CHECK(cobs_decoder_done(&d) && d.length == n && memcmp(out, in, n) == 0);
    }
}

static void test_direction_vectors(void)
{
    static const uint32_t seeds[3] = {0x00000000u, 0x00000001u, 0xDEADBEEFu};
    static const uint32_t words[3][4] = {
        {0x00000000u, 0x92CA2F0Eu, 0x3CD6E3F3u, 0x1B147DCCu},
        {0x2FEF5C8Fu, 0x50653BEDu, 0xCC56A2EBu, 0x9D03E637u},
        {0xC2D7C390u, 0x30E635D7u, 0x917688E1u, 0xF4B387E3u},
    };
    for (int s = 0; s < 3; s++)
        for (uint32_t k = 0; k < 4; k++)
            CHECK(dir_word(seeds[s], k) == words[s][k]);
    static const char *signs[2] = {"++++---+--+++-+-++++-+++++++-+--", "----+--+++----+++++-+-++-+----++"};
    for (int s = 0; s < 2; s++)
        for (uint32_t j = 0; j < 32; j++)
            CHECK(dir_rademacher(seeds[s + 1], j) == (signs[s][j] == '+' ? 1 : -1));
    static const double gaussian[4] = {1.2045592, -0.8011999, 0.0844710, 1.1275764};
    static const double sphere[4] = {1.3120486, -0.8726953, 0.0920088, 1.2281962};
    double norm2 = 0;
    for (uint32_t j = 0; j < 4; j++) {
        CHECK(fabs(dir_gaussian(7, j) - gaussian[j]) < 1e-6);
        norm2 += dir_gaussian(7, j) * dir_gaussian(7, j);
    }
    for (uint32_t j = 0; j < 4; j++)
        CHECK(fabs(dir_gaussian(7, j) * 2.0 / sqrt(norm2) - sphere[j]) < 1e-6);
}

static void test_hello_and_info(void)
{
    reply r = request(0x01, (const uint8_t[]){1, 1}, 2);
    CHECK(r.status == 0 && r.payload[0] == 1);
    CHECK((r.payload[2] | r.payload[3] << 8) == NET_MAX_IN_FLIGHT);
    /* seeded perturbations, layer input injection, bias perturbations; no reply cache */
    CHECK(u32_at(r.payload + 4) == NET_MAX_REQUEST && u32_at(r.payload + 8) == (1 | 2 | 8));
    CHECK((size_t)(r.payload[16] | r.payload[17] << 8) == strlen(board_identity()));
    CHECK(memcmp(r.payload + 18, board_identity(), strlen(board_identity())) == 0);
    CHECK(request(0x01, (const uint8_t[]){2, 3}, 2).status == 10);
    CHECK(request(0x01, (const uint8_t[]){1}, 1).status == 2);
    r = request(0x02, "", 0);
    r.payload[r.length] = 0;
    const char *json = (const char *)r.payload;
    CHECK(r.status == 0 && json[0] == '{' && json[r.length - 1] == '}');
    CHECK(strstr(json, "\"identity\": \"test \\\"board\\\"\"") != NULL);
    CHECK(strstr(json, "\"gain\": 0.125") != NULL);
    CHECK(strstr(json, "\"resolution\": 0.00006103515625") != NULL);
    CHECK(strstr(json, "\"max_batch\": 64") != NULL);
    CHECK(strstr(json, "\"bias_perturbation\": true") != NULL);
    CHECK((strstr(json, "\"kind\": \"conv\"") != NULL) == net_is_conv(0));
    if (net_is_conv(0)) {
        const net_conv *c = &NET_CONV_SHAPES[0];
        char conv[160];
        snprintf(conv, sizeof conv, "\"chunks\": %u, \"conv\": {\"in_channels\": %u, \"out_channels\": %u, "
                 "\"height\": %u, \"width\": %u, \"kernel\": %u, \"pool\": %u, \"pooling\": \"avg\"}",
                 c->out_channels, c->in_channels, c->out_channels, c->height, c->width, c->kernel, c->pool);
        CHECK(strstr(json, conv) != NULL);
    }
}

/* Bytes that must not produce a reply, each counted as one rejected frame. */
static void test_malformed_frames_are_dropped_and_counted(void)
{
    request(0x01, (const uint8_t[]){1, 1}, 2); /* fresh session */
    reply r;
    size_t n, len;
    unsigned rejected = 0;

    n = frame_body(body, 1, 0x0A, 1, "abc", 3);
    body[13] ^= 0x04; /* payload bit flip: CRC mismatch */
    len = ref_cobs_encode(body, n, stream);
    stream[len++] = 0;
    CHECK(feed_raw(stream, len, &r) == 0);
    rejected++;

    n = frame_body(body, 1, 0x0A, 2, "abc", 3);
    len = ref_cobs_encode(body, n, stream);
    stream[len - 2] = 0; /* cut inside a block: bad COBS, then a stray byte and delimiter */
    CHECK(feed_raw(stream, len - 1, &r) == 0);
    rejected++;
    CHECK(feed_raw((const uint8_t[]){0x05, 0x00}, 2, &r) == 0); /* a block cut short */
    rejected++;

    CHECK(feed_raw((const uint8_t[]){0x04, 1, 2, 3, 0x00}, 5, &r) == 0); /* shorter than 16 bytes */
    rejected++;

    n = frame_body(body, 1, 0x0A, 3, "abc", 3);
    put_u32(body + 8, 2); /* length field disagrees */
    put_u32(body + n - 4, crc32_final(crc32_update(CRC32_INIT, body, n - 4)));
    len = ref_cobs_encode(body, n, stream);
    stream[len++] = 0;
    CHECK(feed_raw(stream, len, &r) == 0);
    rejected++;

    n = frame_body(body, 2, 0x0A, 4, "abc", 3); /* protocol version 2 */
    len = ref_cobs_encode(body, n, stream);
    stream[len++] = 0;
    CHECK(feed_raw(stream, len, &r) == 0);
    rejected++;

    static uint8_t big[NET_MAX_REQUEST + 64];
    memset(big, 0x55, sizeof big);
    n = frame_body(body, 1, 0x0A, 5, big, sizeof big); /* longer than max_request */
    len = ref_cobs_encode(body, n, stream);
    stream[len++] = 0;
    CHECK(feed_raw(stream, len, &r) == 0);
    rejected++;

    srand(11);
    for (int i = 0; i < 200; i++) /* random garbage, then a delimiter */
        stream[i] = (uint8_t)(1 + rand() % 255);
    stream[200] = 0;
    CHECK(feed_raw(stream, 201, &r) == 0);
    rejected++;

    CHECK(feed_raw((const uint8_t[]){0x00, 0x00, 0x00}, 3, &r) == 0); /* empty frames: ignored */

    r = request(0x0A, "still here", 10); /* and it keeps serving */
    CHECK(r.status == 0 && r.length == 10 && memcmp(r.payload, "still here", 10) == 0);
    r = request(0x07, "", 0);
    CHECK(r.status == 0 && r.length == 56);
    CHECK(u32_at(r.payload + 40) == rejected);
}

static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)rand() / (float)RAND_MAX; }

static float weights[NET_LAYERS][NET_MAX_WIDTH * NET_MAX_WIDTH], biases[NET_LAYERS][NET_MAX_WIDTH];
static float inputs[NET_MAX_BATCH * NET_MAX_WIDTH];

static double quantized(float w) { return round((double)w * WEIGHT_ONE) / WEIGHT_ONE; }
static double dac(float x) { return round((double)x * (1 << INPUT_FRAC)) / (1 << INPUT_FRAC); }

static void upload(uint32_t batch)
{
    for (uint8_t l = 0; l < NET_LAYERS; l++) {
        uint32_t size = net_array_inputs(l) * net_array_outputs(l);
        for (uint32_t at = 0; at < size; at += 500)
            set_params(l, 0, at, weights[l] + at, size - at < 500 ? size - at : 500, 0);
        set_params(l, 1, 0, biases[l], net_array_outputs(l), 0);
    }
    for (uint32_t at = 0; at < batch * NET_WIDTH[0]; at += 500)
        set_input(0, batch, at, inputs + at, batch * NET_WIDTH[0] - at < 500 ? batch * NET_WIDTH[0] - at : 500, 0);
}

/* Column i of layer l's array on input x: relu(gain * W_i x + b_i) in double, with the device's
 * quantization of weights and inputs. */
static double reference_unit(unsigned l, unsigned i, const double *x, const float *w, const float *b)
{
    unsigned n_in = net_array_inputs(l);
    double s = 0;
    for (unsigned j = 0; j < n_in; j++)
        s += quantized(w[i * n_in + j]) * dac((float)x[j]);
    s = s / (1 << GAIN_SHIFTS[l]) + quantized(b[i]);
    return s > 0 ? s : 0;
}

/* Layer l on input x: the array's outputs, or a conv layer's average-pooled maps, written
 * straight from the definition (padded patches per pixel, channel-major). */
static void reference_layer(unsigned l, const double *x, const float *w, const float *b, double *y)
{
    if (!net_is_conv(l)) {
        for (unsigned i = 0; i < NET_WIDTH[l + 1]; i++)
            y[i] = reference_unit(l, i, x, w, b);
        return;
    }
    const net_conv *c = &NET_CONV_SHAPES[l];
    unsigned p = c->pool, h = c->height, wd = c->width, k = c->kernel;
    for (unsigned i = 0; i < NET_WIDTH[l + 1]; i++)
        y[i] = 0;
    for (unsigned r = 0; r < h; r++)
        for (unsigned s = 0; s < wd; s++) {
            double patch[NET_MAX_WIDTH];
            unsigned q = 0;
            for (unsigned ch = 0; ch < c->in_channels; ch++)
                for (unsigned dr = 0; dr < k; dr++)
                    for (unsigned ds = 0; ds < k; ds++) {
                        int rr = (int)(r + dr) - (int)(k / 2), ss = (int)(s + ds) - (int)(k / 2);
                        patch[q++] = rr < 0 || ss < 0 || rr >= (int)h || ss >= (int)wd
                                         ? 0.0 : x[(ch * h + (unsigned)rr) * wd + (unsigned)ss];
                    }
            for (unsigned o = 0; o < c->out_channels; o++)
                y[(o * (h / p) + r / p) * (wd / p) + s / p] += reference_unit(l, o, patch, w, b) / (p * p);
        }
}

static void test_forward_matches_quantized_reference(void)
{
    srand(3);
    for (unsigned l = 0; l < NET_LAYERS; l++) {
        for (unsigned k = 0; k < net_array_inputs(l) * net_array_outputs(l); k++)
            weights[l][k] = uniform(-1, 1);
        for (unsigned k = 0; k < net_array_outputs(l); k++)
            biases[l][k] = uniform(-0.2f, 0.2f);
    }
    uint32_t batch = 5;
    for (unsigned k = 0; k < batch * NET_WIDTH[0]; k++)
        inputs[k] = uniform(0, 1);
    upload(batch);
    reply r = request(0x05, "", 0);
    uint32_t outputs = 0;
    for (unsigned l = 0; l < NET_LAYERS; l++)
        outputs += NET_WIDTH[l + 1];
    CHECK(r.status == 0 && r.length == 4 * batch * outputs);
    double worst = 0;
    uint32_t at = 0;
    for (unsigned last = 0; last < NET_LAYERS; last++)
        for (uint32_t b = 0; b < batch; b++) {
            double x[NET_MAX_WIDTH], y[NET_MAX_WIDTH];
            for (unsigned j = 0; j < NET_WIDTH[0]; j++)
                x[j] = inputs[b * NET_WIDTH[0] + j];
            for (unsigned l = 0; l <= last; l++) {
                reference_layer(l, x, weights[l], biases[l], y);
                memcpy(x, y, sizeof y);
            }
            for (unsigned i = 0; i < NET_WIDTH[last + 1]; i++, at++)
                worst = fmax(worst, fabs(f32_at(r.payload + 4 * at) - y[i]));
        }
    CHECK(worst < 1e-5);
}

static void test_perturbations_follow_the_seeded_directions(void)
{
    /* Layer 0 at base + sign * eps * v, against the reference on those very weights; rademacher
     * with eps = 0.25 is exact on the cell grid, and nothing here reaches the bounds. */
    uint32_t batch = 5, rows = net_array_outputs(0), n_in = net_array_inputs(0), n = n_in + 1;
    uint32_t outputs = NET_WIDTH[1];
    const uint32_t seeds[2] = {11, 12};
    for (unsigned k = 0; k < rows * n_in; k++)
        weights[0][k] = uniform(-0.5f, 0.5f);
    for (unsigned k = 0; k < rows; k++)
        biases[0][k] = 0.6f;
    upload(batch);
    reply base = request(0x05, "", 0);
    static float base_out[NET_MAX_BATCH * NET_MAX_WIDTH];
    memcpy(base_out, base.payload, 4 * batch * outputs);
    reply r = perturbed(0, DIST_RADEMACHER, 3, 0.25, 0xFFFFFFFFu, seeds, 2);
    CHECK(r.status == 0 && r.length == 4 * 2 * 2 * batch * outputs);
    double worst = 0;
    static float moved_w[NET_MAX_WIDTH * NET_MAX_WIDTH];
    float moved_b[NET_MAX_WIDTH];
    for (unsigned half = 0; half < 2; half++) /* the plus replies, then the minus ones */
        for (unsigned k = 0; k < 2; k++) {
            double sign = half ? -0.25 : 0.25;
            for (unsigned i = 0; i < rows; i++) {
                for (unsigned j = 0; j < n_in; j++)
                    moved_w[i * n_in + j] = (float)(weights[0][i * n_in + j] + sign * dir_rademacher(seeds[k], i * n + j));
                moved_b[i] = (float)(biases[0][i] + sign * dir_rademacher(seeds[k], i * n + n_in));
            }
            for (uint32_t b = 0; b < batch; b++) {
                double x[NET_MAX_WIDTH], y[NET_MAX_WIDTH];
                for (unsigned j = 0; j < NET_WIDTH[0]; j++)
                    x[j] = inputs[b * NET_WIDTH[0] + j];
                reference_layer(0, x, moved_w, moved_b, y);
                for (unsigned i = 0; i < outputs; i++)
                    worst = fmax(worst, fabs(f32_at(r.payload + 4 * (((half * 2 + k) * batch + b) * outputs + i)) - y[i]));
            }
        }
    CHECK(worst < 1e-5);

    /* One chunk (an output unit, or a conv channel's whole map): only its outputs move. */
    unsigned chunk = rows / 2, per_chunk = outputs / rows;
    r = perturbed(0, DIST_GAUSSIAN, 1, 0.05, chunk, seeds, 1);
    CHECK(r.status == 0 && r.length == 4 * batch * outputs);
    for (uint32_t b = 0; b < batch; b++)
        for (unsigned i = 0; i < outputs; i++) {
            float v = f32_at(r.payload + 4 * (b * outputs + i));
            CHECK(i / per_chunk == chunk ? v != base_out[b * outputs + i] : v == base_out[b * outputs + i]);
        }
    /* The base is programmed back before the next forward. */
    r = request(0x05, "", 0);
    CHECK(memcmp(r.payload, base_out, 4 * batch * outputs) == 0);
}

enum { BIAS_BATCH = 4, BIAS_BLOCK = 4 * BIAS_BATCH * NET_MAX_WIDTH };

/* Layer l measured on its input with its bias array written as `bias` by SET_PARAMS: a seeded
 * PERTURBED_FORWARD at eps 0, which is the base itself. `out` gets the reply's bytes. */
static void measure_with_bias(unsigned l, const float *bias, uint8_t *out)
{
    set_params((uint8_t)l, 1, 0, bias, net_array_outputs(l), 0);
    reply r = perturbed((uint8_t)l, DIST_RADEMACHER, 1, 0.0, 0xFFFFFFFFu, (const uint32_t[]){0}, 1);
    CHECK(r.status == 0 && r.length == 4 * BIAS_BATCH * NET_WIDTH[l + 1]);
    memcpy(out, r.payload, r.length);
}

/* The bias at clip(base + step) in chunk `chunk` (every chunk for 0xFFFFFFFF), base elsewhere. */
static void moved_bias(unsigned l, double step, uint32_t chunk, float *out)
{
    for (unsigned i = 0; i < net_array_outputs(l); i++)
        out[i] = chunk == 0xFFFFFFFFu || chunk == i ? (float)fmax(-1.0, fmin(1.0, biases[l][i] + step))
                                                    : biases[l][i];
}

/* Distribution 3 moves each chunk's bias (a dense unit's, a conv channel's) by +-eps and nothing
 * else: its replies equal, bit for bit, the layer's outputs with the bias array written at
 * clip(base +- eps), for every seed, and no row of the array is programmed for them. */
static void test_bias_perturbations_move_only_the_biases(void)
{
    const uint32_t seeds[2] = {3, 77}, all = 0xFFFFFFFFu;
    const double eps = 0.1; /* 1638.4 cells: written or perturbed, it rounds to the same cell */
    srand(5);
    /* Biases on the cell grid (so both paths round alike), the first and last at the bounds. */
    for (unsigned l = 0; l < NET_LAYERS; l++) {
        unsigned rows = net_array_outputs(l);
        for (unsigned k = 0; k < net_array_inputs(l) * rows; k++)
            weights[l][k] = uniform(-0.5f, 0.5f);
        for (unsigned k = 0; k < rows; k++)
            biases[l][k] = (float)quantized(uniform(-0.3f, 0.3f));
        biases[l][0] = (float)quantized(0.95f);         /* + eps clips at 1 */
        biases[l][rows - 1] = (float)-quantized(0.95f); /* - eps clips at -1 */
    }
    for (unsigned k = 0; k < BIAS_BATCH * NET_MAX_WIDTH; k++)
        inputs[k] = uniform(0, 1);
    upload(BIAS_BATCH);
    for (uint8_t l = 1; l < NET_LAYERS; l++) /* deeper layers are measured on an injected input */
        set_input(l, BIAS_BATCH, 0, inputs, BIAS_BATCH * NET_WIDTH[l], 0);
    static uint8_t base_forward[4 * NET_LAYERS * BIAS_BATCH * NET_MAX_WIDTH];
    reply r = request(0x05, "", 0);
    uint32_t forward_len = r.length;
    CHECK(r.status == 0 && forward_len <= sizeof base_forward);
    memcpy(base_forward, r.payload, forward_len);

    for (unsigned l = 0; l < NET_LAYERS; l++) {
        unsigned rows = net_array_outputs(l);
        uint32_t block = 4 * BIAS_BATCH * NET_WIDTH[l + 1]; /* bytes of one measurement */
        const uint32_t chunks[2] = {0, rows / 2};
        static uint8_t base[BIAS_BLOCK], every[4 * BIAS_BLOCK], one[2][2 * BIAS_BLOCK], at[BIAS_BLOCK];
        measure_with_bias(l, biases[l], base); /* seeded: the array needs its base back after it */

        /* Every chunk, + then -, two seeds each: the base weights go back once, for the
         * measurement above, and no row is programmed per direction. */
        unsigned long rows_before = rows_programmed;
        uint64_t writes = param_writes();
        r = perturbed((uint8_t)l, DIST_BIAS, 3, eps, all, seeds, 2);
        CHECK(r.status == 0 && r.length == 4 * block);
        memcpy(every, r.payload, 4 * block);
        CHECK(rows_programmed - rows_before == rows && param_writes() == writes + 1);
        rows_before = rows_programmed;
        for (unsigned c = 0; c < 2; c++) {
            r = perturbed((uint8_t)l, DIST_BIAS, 3, eps, chunks[c], seeds, 1);
            CHECK(r.status == 0 && r.length == 2 * block);
            memcpy(one[c], r.payload, 2 * block);
        }
        r = perturbed((uint8_t)l, DIST_BIAS, 2, 0.0, all, seeds, 1); /* eps 0: the base */
        CHECK(r.status == 0 && r.length == block && memcmp(r.payload, base, block) == 0);
        CHECK(rows_programmed == rows_before && param_writes() == writes + 1);
        CHECK(memcmp(every, base, block) != 0 && memcmp(every + 2 * block, base, block) != 0);

        /* The same points written with SET_PARAMS; for layer 0 FORWARD agrees as well. */
        float moved[NET_MAX_WIDTH];
        for (unsigned half = 0; half < 2; half++) {
            double step = half ? -eps : eps;
            moved_bias(l, step, all, moved);
            measure_with_bias(l, moved, at);
            for (unsigned k = 0; k < 2; k++)
                CHECK(memcmp(every + (2 * half + k) * block, at, block) == 0);
            if (l == 0) {
                r = request(0x05, "", 0);
                CHECK(r.status == 0 && memcmp(r.payload, at, block) == 0);
            }
            for (unsigned c = 0; c < 2; c++) {
                moved_bias(l, step, chunks[c], moved);
                measure_with_bias(l, moved, at);
                CHECK(memcmp(one[c] + half * block, at, block) == 0);
            }
        }
        set_params((uint8_t)l, 1, 0, biases[l], rows, 0);
    }

    /* After bias perturbations the array still holds the base weights: FORWARD programs nothing
     * and answers as before them. A seeded direction, by contrast, programs every row per
     * direction, and the base again before the next FORWARD. */
    r = request(0x05, "", 0);
    CHECK(r.status == 0 && r.length == forward_len && memcmp(r.payload, base_forward, forward_len) == 0);
    for (uint8_t l = 0; l < NET_LAYERS; l++)
        CHECK(perturbed(l, DIST_BIAS, 3, 0.5, all, seeds, 2).status == 0);
    unsigned long rows_before = rows_programmed;
    uint64_t writes = param_writes();
    r = request(0x05, "", 0);
    CHECK(r.status == 0 && r.length == forward_len && memcmp(r.payload, base_forward, forward_len) == 0);
    CHECK(rows_programmed == rows_before && param_writes() == writes);
    CHECK(perturbed(0, DIST_RADEMACHER, 3, eps, all, seeds, 2).status == 0);
    CHECK(rows_programmed - rows_before == 4 * net_array_outputs(0) && param_writes() == writes + 4);
    r = request(0x05, "", 0);
    CHECK(r.status == 0 && memcmp(r.payload, base_forward, forward_len) == 0);
    CHECK(rows_programmed - rows_before == 5 * net_array_outputs(0) && param_writes() == writes + 5);

    /* Weights staged after a FORWARD are programmed (once) by the bias perturbation that next
     * reads the layer, which FORWARD then finds in place. */
    uint32_t size = net_array_inputs(0) * net_array_outputs(0);
    for (uint32_t k = 0; k < size; k++)
        weights[0][k] = uniform(-0.5f, 0.5f);
    for (uint32_t at = 0; at < size; at += 500)
        set_params(0, 0, at, weights[0] + at, size - at < 500 ? size - at : 500, 0);
    rows_before = rows_programmed;
    r = perturbed(0, DIST_BIAS, 1, 0.0, all, seeds, 1);
    CHECK(r.status == 0 && rows_programmed - rows_before == net_array_outputs(0));
    memcpy(base_forward, r.payload, r.length);
    r = request(0x05, "", 0);
    CHECK(r.status == 0 && memcmp(r.payload, base_forward, 4 * BIAS_BATCH * NET_WIDTH[1]) == 0);
    CHECK(rows_programmed - rows_before == net_array_outputs(0));
}

static void test_refusals_queue_their_status_codes(void)
{
    char text[64];
    while (pop_error(text) != 0)
        ;
    float one = 0.5f, outside = 1.5f;
    CHECK(request(0x42, "", 0).status == 1);
    CHECK(request(0x03, "\x00\x00", 2).status == 2);
    set_params(NET_LAYERS, 0, 0, &one, 1, 3);
    set_params(0, 2, 0, &one, 1, 4);
    set_params(0, 1, net_array_outputs(0), &one, 1, 5);
    set_params(0, 1, 0, &outside, 1, 6);
    set_input(0, NET_MAX_BATCH + 1, 0, &one, 1, 8);
    CHECK(perturbed(0, 4, 3, 0.1, 0xFFFFFFFFu, (const uint32_t[]){1}, 1).status == 9); /* 3 is bias */
    CHECK(perturbed(0, 255, 3, 0.1, 0xFFFFFFFFu, (const uint32_t[]){1}, 1).status == 9);
    CHECK(perturbed(0, 0, 3, 0.1, net_array_outputs(0), (const uint32_t[]){1}, 1).status == 4);
    static const int32_t expect[] = {1, 2, 3, 4, 5, 6, 8, 9, 9, 4};
    for (unsigned k = 0; k < sizeof expect / sizeof expect[0]; k++)
        CHECK(pop_error(text) == expect[k] && strlen(text) > 0);
    CHECK(pop_error(text) == 0 && strcmp(text, "No error") == 0);

    /* An out-of-bounds value anywhere in a frame writes nothing of it. */
    request(0x09, "", 0); /* RESET: nothing staged */
    CHECK(request(0x05, "", 0).status == 7);
    float row[4] = {0.1f, 0.2f, 1.01f, 0.3f};
    set_params(0, 1, 0, row, 4, 6);
    reply r = request(0x07, "", 0);
    CHECK(u32_at(r.payload) == 2); /* NOT_READY and OUT_OF_BOUNDS waiting */

    for (int i = 0; i < 20; i++)
        request(0x42, "", 0);
    int32_t last = 0;
    for (int i = 0; i < 16; i++)
        last = pop_error(text);
    CHECK(last == -350 && strcmp(text, "Queue overflow") == 0);
    CHECK(pop_error(text) == 0);
}

int main(void)
{
    hil_device_init();
    test_crc_check_value();
    test_cobs_vectors_and_round_trips();
    test_direction_vectors();
    test_hello_and_info();
    test_malformed_frames_are_dropped_and_counted();
    test_forward_matches_quantized_reference();
    test_perturbations_follow_the_seeded_directions();
    test_bias_perturbations_move_only_the_biases();
    test_refusals_queue_their_status_codes();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
