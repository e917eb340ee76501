/* Message handling of firmware_protocol.md sections 2 to 6.
 *
 * Every handler validates its whole request before it changes anything or sends a byte, so a
 * refused request leaves the device as it was; then it streams its reply through the COBS
 * encoder (the reply length is known up front), never holding a whole reply in RAM. */
#include "device.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "array.h"
#include "board.h"
#include "cobs.h"
#include "crc32.h"
#include "directions.h"
#include "network.h"

enum { HEADER_SIZE = 12, CRC_SIZE = 4, REPLY_BIT = 0x80, ERROR_QUEUE = 16, ERROR_TEXT = 48 };
#define ALL_CHUNKS 0xFFFFFFFFu
enum { SIGN_PLUS = 1, SIGN_MINUS = 2 };
enum { CAP_SEEDED = 1, CAP_INJECTION = 2, CAP_BIAS = 8 }; /* bit 2, the reply cache, is clear */

enum message {
    MSG_HELLO = 0x01, MSG_INFO, MSG_SET_PARAMS, MSG_SET_INPUT, MSG_FORWARD,
    MSG_PERTURBED_FORWARD, MSG_STATUS, MSG_ERROR, MSG_RESET, MSG_PING,
};

enum status {
    ST_OK, ST_UNKNOWN_TYPE, ST_BAD_LENGTH, ST_BAD_LAYER, ST_BAD_PARAM, ST_OUT_OF_RANGE,
    ST_OUT_OF_BOUNDS, ST_NOT_READY, ST_BATCH_TOO_LARGE, ST_UNSUPPORTED, ST_VERSION, ST_INTERNAL,
};

static const unsigned GAIN_SHIFTS[NET_LAYERS] = NET_GAIN_SHIFTS;

/* ---- state ------------------------------------------------------------------------------ */

/* Which elements of an array the host has written at least once (NOT_READY until all are). */
typedef struct {
    uint8_t *bits;
    size_t bytes;
    uint32_t count;
} written_set;

static struct {
    int16_t weight[NET_MAX_WIDTH * NET_MAX_WIDTH]; /* staged, row-major outputs x inputs */
    int16_t bias[NET_MAX_WIDTH];
    int16_t input[NET_MAX_BATCH * NET_MAX_WIDTH]; /* DAC codes */
    uint8_t weight_bits[(NET_MAX_WIDTH * NET_MAX_WIDTH + 7) / 8];
    uint8_t bias_bits[(NET_MAX_WIDTH + 7) / 8];
    uint8_t input_bits[(NET_MAX_BATCH * NET_MAX_WIDTH + 7) / 8];
    written_set weight_written, bias_written, input_written;
    uint32_t batch;  /* rows of input; 0: none */
    bool programmed; /* the array holds exactly the staged weights */
} layers[NET_LAYERS];

static struct {
    int32_t code;
    char text[ERROR_TEXT];
} errors[ERROR_QUEUE];
static unsigned error_first, error_count;

static struct {
    uint64_t queries, param_writes, device_us, frames_received, frames_rejected;
} counters;

static uint8_t rx[HEADER_SIZE + NET_MAX_REQUEST + CRC_SIZE];
static cobs_decoder decoder;
static bool rx_seen; /* bytes arrived since the last delimiter */

static cobs_encoder encoder;
static uint32_t tx_crc;

/* Scratch for one measurement: a row's cells, the column sums, one vector's activations. */
static int16_t row_cells[NET_MAX_WIDTH];
static int16_t chain[2][NET_MAX_WIDTH];
static int64_t sums[NET_MAX_WIDTH];
static float activations[NET_MAX_WIDTH];
static float direction[NET_MAX_WIDTH + 1];
static int16_t row_bias[NET_MAX_WIDTH];
static int16_t patch[NET_MAX_WIDTH]; /* a conv layer's array input at one pixel */
static float pixel[NET_MAX_WIDTH];   /* and its array's outputs there */

/* The reason a handler refused its request: pushed to the error queue by the dispatcher. */
static const char *failure;

static unsigned fail(unsigned status, const char *why)
{
    failure = why;
    return status;
}

/* ---- little-endian fields --------------------------------------------------------------- */

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static float get_f32(const uint8_t *p)
{
    uint32_t bits = get_u32(p);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double get_f64(const uint8_t *p)
{
    uint64_t bits = (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* ---- replies ---------------------------------------------------------------------------- */

static void tx(const void *data, size_t n)
{
    tx_crc = crc32_update(tx_crc, data, n);
    cobs_encoder_put(&encoder, data, n);
}

static void tx_u8(uint8_t v) { tx(&v, 1); }

static void tx_u16(uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tx(b, 2);
}

static void tx_u32(uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    tx(b, 4);
}

static void tx_u64(uint64_t v)
{
    tx_u32((uint32_t)v);
    tx_u32((uint32_t)(v >> 32));
}

static void tx_f32(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    tx_u32(bits);
}

static void tx_f64(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    tx_u64(bits);
}

static void reply_begin(uint8_t type, uint16_t id, uint16_t status, uint32_t length)
{
    tx_crc = CRC32_INIT;
    tx_u8(HIL_PROTOCOL_VERSION);
    tx_u8((uint8_t)(type | REPLY_BIT));
    tx_u16(id);
    tx_u16(status);
    tx_u16(0);
    tx_u32(length);
}

static void reply_end(void)
{
    uint32_t crc = crc32_final(tx_crc);
    uint8_t b[4] = {(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16), (uint8_t)(crc >> 24)};
    cobs_encoder_put(&encoder, b, 4);
    cobs_encoder_finish(&encoder);
}

/* A reply with no payload: an acknowledgement, or a refusal with its status. */
static void reply_empty(uint8_t type, uint16_t id, uint16_t status)
{
    reply_begin(type, id, status, 0);
    reply_end();
}

/* ---- error queue (SYST:ERR? semantics) -------------------------------------------------- */

static void push_error(int32_t code, const char *text)
{
    unsigned slot;
    if (error_count == ERROR_QUEUE) {
        slot = (error_first + ERROR_QUEUE - 1) % ERROR_QUEUE;
        code = -350;
        text = "Queue overflow";
    } else {
        slot = (error_first + error_count++) % ERROR_QUEUE;
    }
    errors[slot].code = code;
    strncpy(errors[slot].text, text, ERROR_TEXT - 1);
    errors[slot].text[ERROR_TEXT - 1] = '\0';
}

/* ---- staging ---------------------------------------------------------------------------- */

static void written_clear(written_set *s)
{
    memset(s->bits, 0, s->bytes);
    s->count = 0;
}

static void written_init(written_set *s, uint8_t *bits, size_t bytes)
{
    s->bits = bits;
    s->bytes = bytes;
    written_clear(s);
}

static void written_mark(written_set *s, uint32_t index)
{
    uint8_t bit = (uint8_t)(1u << (index % 8));
    if (!(s->bits[index / 8] & bit)) {
        s->bits[index / 8] |= bit;
        s->count++;
    }
}

static void reboot(void)
{
    for (unsigned l = 0; l < NET_LAYERS; l++) {
        written_init(&layers[l].weight_written, layers[l].weight_bits, sizeof layers[l].weight_bits);
        written_init(&layers[l].bias_written, layers[l].bias_bits, sizeof layers[l].bias_bits);
        written_init(&layers[l].input_written, layers[l].input_bits, sizeof layers[l].input_bits);
        layers[l].programmed = false;
        layers[l].batch = 0;
    }
    error_first = error_count = 0;
}

static bool params_ready(unsigned l)
{
    return layers[l].weight_written.count == net_array_inputs(l) * net_array_outputs(l) &&
           layers[l].bias_written.count == net_array_outputs(l);
}

static bool input_ready(unsigned l)
{
    return layers[l].batch && layers[l].input_written.count == layers[l].batch * NET_WIDTH[l];
}

/* Weights and biases in [-1, 1] to cells: round to the nearest 2^-WEIGHT_FRAC. */
static int16_t to_cell(double w)
{
    if (w > 1.0)
        w = 1.0;
    if (w < -1.0)
        w = -1.0;
    double scaled = w * WEIGHT_ONE;
    return (int16_t)(scaled >= 0 ? (int32_t)(scaled + 0.5) : -(int32_t)(-scaled + 0.5));
}

/* The input DAC: round to the nearest code, saturating at +-INT16_MAX; NaN reads as 0. */
static int16_t to_dac(float x)
{
    float scaled = x * (float)(1 << INPUT_FRAC);
    if (!(scaled == scaled))
        return 0;
    if (scaled >= INT16_MAX)
        return INT16_MAX;
    if (scaled <= -INT16_MAX)
        return -INT16_MAX;
    return (int16_t)(scaled >= 0 ? (int32_t)(scaled + 0.5f) : -(int32_t)(-scaled + 0.5f));
}

/* ---- the array: programming and reading -------------------------------------------------- */

static void program_base(unsigned l)
{
    if (layers[l].programmed)
        return;
    for (unsigned i = 0; i < net_array_outputs(l); i++)
        array_program_row(l, i, &layers[l].weight[i * net_array_inputs(l)]);
    layers[l].programmed = true;
    counters.param_writes++;
}

/* One read of layer l's array on `x` (DAC codes): y_i = relu(gain * sum_i + bias_i) for every
 * column, each computed as one exact integer sum converted to float once. */
static void read_array(unsigned l, const int16_t *x, const int16_t *bias, float *y)
{
    unsigned shift = GAIN_SHIFTS[l];
    float scale = 1.0f / (float)(1ull << (WEIGHT_FRAC + INPUT_FRAC + shift));
    array_read(l, x, sums);
    for (unsigned i = 0; i < net_array_outputs(l); i++) {
        int64_t total = sums[i] + (int64_t)bias[i] * ((int64_t)1 << (INPUT_FRAC + shift));
        y[i] = total > 0 ? (float)total * scale : 0.0f;
    }
}

/* A conv layer on one image (channel-major DAC codes): the array is read once per pixel on the
 * zero-padded patch around it (elements ordered channel, kernel row, kernel column), and each
 * channel's map is average-pooled into y, channel-major. */
static void read_conv(unsigned l, const int16_t *x, const int16_t *bias, float *y)
{
    const net_conv *c = &NET_CONV_SHAPES[l];
    unsigned pool = c->pool, out_h = c->height / pool, out_w = c->width / pool;
    int half = (int)c->kernel / 2;
    float share = 1.0f / (float)(pool * pool);
    for (unsigned i = 0; i < NET_WIDTH[l + 1]; i++)
        y[i] = 0.0f;
    for (unsigned r = 0; r < c->height; r++)
        for (unsigned s = 0; s < c->width; s++) {
            unsigned q = 0;
            for (unsigned ch = 0; ch < c->in_channels; ch++)
                for (int dr = -half; dr <= half; dr++)
                    for (int ds = -half; ds <= half; ds++, q++) {
                        int rr = (int)r + dr, ss = (int)s + ds;
                        bool inside = rr >= 0 && rr < (int)c->height && ss >= 0 && ss < (int)c->width;
                        patch[q] = inside ? x[(ch * c->height + (unsigned)rr) * c->width + (unsigned)ss] : 0;
                    }
            read_array(l, patch, bias, pixel);
            unsigned at = (r / pool) * out_w + s / pool;
            for (unsigned o = 0; o < c->out_channels; o++)
                y[o * out_h * out_w + at] += pixel[o] * share;
        }
}

/* One input vector through layer l: its activations, NET_WIDTH[l + 1] of them. */
static void read_layer(unsigned l, const int16_t *x, const int16_t *bias, float *y)
{
    if (net_is_conv(l))
        read_conv(l, x, bias, y);
    else
        read_array(l, x, bias, y);
}

/* ---- handlers: return ST_OK after sending the reply, or a status having sent nothing ------ */

static unsigned on_hello(const uint8_t *p, uint32_t n, uint16_t id)
{
    if (n < 2)
        return fail(ST_BAD_LENGTH, "HELLO needs min and max version");
    if (!(p[0] <= HIL_PROTOCOL_VERSION && HIL_PROTOCOL_VERSION <= p[1]))
        return fail(ST_VERSION, "no protocol version in common; this device speaks 1");
    reboot();
    uint16_t id_len = (uint16_t)strlen(board_identity()), fw_len = (uint16_t)strlen(HIL_FIRMWARE_VERSION);
    reply_begin(MSG_HELLO, id, ST_OK, 16u + 2u + id_len + 2u + fw_len);
    tx_u8(HIL_PROTOCOL_VERSION);
    tx_u8(0);
    tx_u16(NET_MAX_IN_FLIGHT);
    tx_u32(NET_MAX_REQUEST);
    tx_u32(CAP_SEEDED | CAP_INJECTION | CAP_BIAS);
    tx_u32(NET_RESPONSE_MS);
    tx_u16(id_len);
    tx(board_identity(), id_len);
    tx_u16(fw_len);
    tx(HIL_FIRMWARE_VERSION, fw_len);
    reply_end();
    return ST_OK;
}

/* INFO is written twice: once to count its bytes (the header needs the length), once to send. */
static uint32_t info_length;
static bool info_counting;

static void info_out(const char *s, size_t n)
{
    if (info_counting)
        info_length += (uint32_t)n;
    else
        tx(s, n);
}

static void info_text(const char *s) { info_out(s, strlen(s)); }

static void info_uint(uint32_t v)
{
    char digits[10];
    unsigned n = 0;
    do {
        digits[sizeof digits - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    info_out(digits + sizeof digits - n, n);
}

/* 2^-k written exactly: 5^k / 10^k, so "0." then 5^k padded to k digits (k <= 27). */
static void info_pow2(unsigned k)
{
    if (k == 0) {
        info_text("1.0");
        return;
    }
    uint64_t five = 1;
    for (unsigned i = 0; i < k; i++)
        five *= 5;
    char digits[28];
    for (unsigned i = k; i-- > 0; five /= 10)
        digits[i] = (char)('0' + five % 10);
    info_text("0.");
    info_out(digits, k);
}

static void info_string(const char *s)
{
    info_text("\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            info_text("\\");
        if ((unsigned char)*s >= 0x20)
            info_out(s, 1);
    }
    info_text("\"");
}

static void info_param(const char *name, unsigned rows, unsigned cols)
{
    info_text("{\"name\": ");
    info_string(name);
    info_text(", \"shape\": [");
    info_uint(rows);
    if (cols) {
        info_text(", ");
        info_uint(cols);
    }
    info_text("], \"low\": -1.0, \"high\": 1.0, \"periodic\": false, \"resolution\": ");
    info_pow2(WEIGHT_FRAC);
    info_text(", \"write_noise\": 0.0}");
}

/* `, "key": value` */
static void info_field(const char *key, uint32_t value)
{
    info_text(", \"");
    info_text(key);
    info_text("\": ");
    info_uint(value);
}

/* A conv layer's chunk count (its channels), then its "conv" object. */
static void info_conv(const net_conv *c)
{
    info_uint(c->out_channels);
    info_text(", \"conv\": {\"in_channels\": ");
    info_uint(c->in_channels);
    info_field("out_channels", c->out_channels);
    info_field("height", c->height);
    info_field("width", c->width);
    info_field("kernel", c->kernel);
    info_field("pool", c->pool);
    info_text(", \"pooling\": \"avg\"}");
}

static void info_write(void)
{
    info_text("{\"identity\": ");
    info_string(board_identity());
    info_text(", \"firmware\": ");
    info_string(HIL_FIRMWARE_VERSION);
    info_text(", \"protocol_version\": 1, \"max_batch\": ");
    info_uint(NET_MAX_BATCH);
    info_text(", \"capabilities\": {\"layer_input_injection\": true, \"seeded_perturbations\": true, "
              "\"bias_perturbation\": true}");
    info_text(", \"layers\": [");
    for (unsigned l = 0; l < NET_LAYERS; l++) {
        info_text(l ? ", {" : "{");
        info_text(net_is_conv(l) ? "\"kind\": \"conv\", \"inputs\": " : "\"kind\": \"dense\", \"inputs\": ");
        info_uint(NET_WIDTH[l]);
        info_text(", \"outputs\": ");
        info_uint(NET_WIDTH[l + 1]);
        info_text(", \"activation\": \"relu\", \"gain\": ");
        info_pow2(GAIN_SHIFTS[l]);
        info_text(", \"spliceable\": true, \"chunks\": ");
        if (net_is_conv(l)) {
            info_conv(&NET_CONV_SHAPES[l]);
        } else {
            info_text("null");
        }
        info_text(", \"params\": [");
        info_param("weight", net_array_outputs(l), net_array_inputs(l));
        info_text(", ");
        info_param("bias", net_array_outputs(l), 0);
        info_text("]}");
    }
    info_text("]}");
}

static unsigned on_info(const uint8_t *p, uint32_t n, uint16_t id)
{
    (void)p;
    (void)n;
    info_counting = true;
    info_length = 0;
    info_write();
    info_counting = false;
    reply_begin(MSG_INFO, id, ST_OK, info_length);
    info_write();
    reply_end();
    return ST_OK;
}

static unsigned on_set_params(const uint8_t *p, uint32_t n, uint16_t id)
{
    if (n < 8 || (n - 8) % 4)
        return fail(ST_BAD_LENGTH, "SET_PARAMS: 8-byte header and whole f32 values");
    unsigned l = p[0], index = p[1];
    uint32_t offset = get_u32(p + 4), count = (n - 8) / 4;
    if (l >= NET_LAYERS)
        return fail(ST_BAD_LAYER, "no such layer");
    if (index > 1)
        return fail(ST_BAD_PARAM, "a layer has 2 parameter arrays: weight, bias");
    for (uint32_t k = 0; k < count; k++) {
        float v = get_f32(p + 8 + 4 * k);
        if (!(v >= -1.0f && v <= 1.0f))
            return fail(ST_OUT_OF_BOUNDS, "values outside [-1.0, 1.0]");
    }
    uint32_t size = index == 0 ? net_array_inputs(l) * net_array_outputs(l) : net_array_outputs(l);
    if (offset > size || count > size - offset)
        return fail(ST_OUT_OF_RANGE, "elements run past the end of the array");
    int16_t *cells = index == 0 ? layers[l].weight : layers[l].bias;
    written_set *written = index == 0 ? &layers[l].weight_written : &layers[l].bias_written;
    for (uint32_t k = 0; k < count; k++) {
        cells[offset + k] = to_cell(get_f32(p + 8 + 4 * k));
        written_mark(written, offset + k);
    }
    if (index == 0)
        layers[l].programmed = false;
    reply_empty(MSG_SET_PARAMS, id, ST_OK);
    return ST_OK;
}

static unsigned on_set_input(const uint8_t *p, uint32_t n, uint16_t id)
{
    if (n < 12 || (n - 12) % 4)
        return fail(ST_BAD_LENGTH, "SET_INPUT: 12-byte header and whole f32 values");
    unsigned l = p[0];
    uint32_t batch = get_u32(p + 4), offset = get_u32(p + 8), count = (n - 12) / 4;
    if (l >= NET_LAYERS)
        return fail(ST_BAD_LAYER, "no such layer");
    if (batch == 0 || batch > NET_MAX_BATCH)
        return fail(ST_BATCH_TOO_LARGE, "batch outside 1..max_batch");
    uint32_t size = batch * NET_WIDTH[l];
    if (offset > size || count > size - offset)
        return fail(ST_OUT_OF_RANGE, "elements run past the end of the input");
    if (batch != layers[l].batch) {
        layers[l].batch = batch;
        written_clear(&layers[l].input_written);
    }
    for (uint32_t k = 0; k < count; k++) {
        layers[l].input[offset + k] = to_dac(get_f32(p + 12 + 4 * k));
        written_mark(&layers[l].input_written, offset + k);
    }
    reply_empty(MSG_SET_INPUT, id, ST_OK);
    return ST_OK;
}

static unsigned on_forward(const uint8_t *p, uint32_t n, uint16_t id)
{
    (void)p;
    (void)n;
    uint32_t outputs = 0;
    for (unsigned l = 0; l < NET_LAYERS; l++) {
        if (!params_ready(l))
            return fail(ST_NOT_READY, "parameters not fully written");
        outputs += NET_WIDTH[l + 1];
    }
    if (!input_ready(0))
        return fail(ST_NOT_READY, "input of layer 0 not fully written");
    uint32_t batch = layers[0].batch;
    for (unsigned l = 0; l < NET_LAYERS; l++)
        program_base(l);
    reply_begin(MSG_FORWARD, id, ST_OK, batch * outputs * 4);
    /* Layer by layer as the reply orders them; deeper layers recompute the ones below per
     * vector, so only one vector's activations are ever held. */
    for (unsigned last = 0; last < NET_LAYERS; last++) {
        for (uint32_t b = 0; b < batch; b++) {
            const int16_t *x = &layers[0].input[b * NET_WIDTH[0]];
            for (unsigned l = 0; l <= last; l++) {
                read_layer(l, x, layers[l].bias, activations);
                if (l < last) {
                    for (unsigned i = 0; i < NET_WIDTH[l + 1]; i++)
                        chain[l % 2][i] = to_dac(activations[i]);
                    x = chain[l % 2];
                }
            }
            for (unsigned i = 0; i < NET_WIDTH[last + 1]; i++)
                tx_f32(activations[i]);
        }
    }
    reply_end();
    counters.queries += NET_LAYERS;
    return ST_OK;
}

/* eps in cells for a direction element of +-1: round(eps * 2^WEIGHT_FRAC), at most the whole
 * range, so a cell moves by exactly the same step at +eps and at -eps. */
static int32_t cell_step(double eps)
{
    double scaled = eps * WEIGHT_ONE;
    return scaled > 2.0 * WEIGHT_ONE ? 2 * WEIGHT_ONE : (int32_t)(scaled + 0.5);
}

static int16_t clip_cell(int32_t cell)
{
    return (int16_t)(cell > WEIGHT_ONE ? WEIGHT_ONE : cell < -WEIGHT_ONE ? -WEIGHT_ONE : cell);
}

/* Cells of row `row` of layer l at base + sign * eps * v(seed), clipped to [-1, 1]; the
 * direction's element j = row * (inputs + 1) + q covers the weight row, then the bias. For the
 * seeded distributions only: a bias direction moves no cell of the array (perturb_bias). */
static void perturb_row(unsigned l, unsigned row, int sign, unsigned dist, uint32_t seed, double eps)
{
    unsigned n_in = net_array_inputs(l), n = n_in + 1;
    const int16_t *base = &layers[l].weight[row * n_in];
    uint32_t first = row * n;
    if (dist == DIST_RADEMACHER) {
        int32_t step = cell_step(eps);
        uint32_t word = dir_word(seed, first / 32);
        for (unsigned q = 0; q < n; q++) {
            uint32_t j = first + q;
            if (j % 32 == 0)
                word = dir_word(seed, j / 32);
            int32_t delta = (word >> (j % 32)) & 1u ? step : -step;
            int16_t cell = clip_cell((q < n_in ? base[q] : layers[l].bias[row]) + sign * delta);
            if (q < n_in)
                row_cells[q] = cell;
            else
                row_bias[row] = cell;
        }
        return;
    }
    double norm2 = 0.0;
    for (unsigned q = 0; q < n; q++) {
        direction[q] = (float)dir_gaussian(seed, first + q);
        norm2 += (double)direction[q] * direction[q];
    }
    double scale = dist == DIST_SPHERE ? sqrt((double)n / norm2) : 1.0;
    for (unsigned q = 0; q < n; q++) {
        int16_t b = q < n_in ? base[q] : layers[l].bias[row];
        int16_t cell = to_cell((double)b / WEIGHT_ONE + sign * eps * scale * direction[q]);
        if (q < n_in)
            row_cells[q] = cell;
        else
            row_bias[row] = cell;
    }
}

/* The bias direction (distribution 3) on row `row` of layer l: its bias at base + sign * eps,
 * clipped to [-1, 1] on the cell grid as rademacher does. The weights stay as programmed, since
 * the bias lives in the periphery (read_array), not in the array. */
static void perturb_bias(unsigned l, unsigned row, int sign, double eps)
{
    row_bias[row] = clip_cell(layers[l].bias[row] + sign * cell_step(eps));
}

static unsigned on_perturbed_forward(const uint8_t *p, uint32_t n, uint16_t id)
{
    if (n < 20)
        return fail(ST_BAD_LENGTH, "PERTURBED_FORWARD: 20-byte header");
    unsigned l = p[0], dist = p[1], signs = p[2], count = get_u16(p + 16);
    double eps = get_f64(p + 4);
    uint32_t chunk = get_u32(p + 12);
    if (n != 20u + 4u * count)
        return fail(ST_BAD_LENGTH, "PERTURBED_FORWARD: seed count and length disagree");
    if (dist >= DIST_COUNT)
        return fail(ST_UNSUPPORTED, "unknown distribution");
    if (!signs || signs & ~(unsigned)(SIGN_PLUS | SIGN_MINUS) || count == 0)
        return fail(ST_BAD_LENGTH, "needs at least one sign (bits 0-1) and one seed");
    if (l >= NET_LAYERS)
        return fail(ST_BAD_LAYER, "no such layer");
    unsigned rows = net_array_outputs(l), outputs = NET_WIDTH[l + 1];
    if (chunk != ALL_CHUNKS && chunk >= rows)
        return fail(ST_BAD_PARAM, "no such chunk");
    if (!(eps >= 0.0 && eps <= 2.0))
        return fail(ST_OUT_OF_BOUNDS, "eps outside [0, 2]");
    if (!params_ready(l))
        return fail(ST_NOT_READY, "parameters not fully written");
    if (!input_ready(l))
        return fail(ST_NOT_READY, "input of the layer not fully written");
    uint32_t batch = layers[l].batch;
    unsigned first = chunk == ALL_CHUNKS ? 0 : chunk, last = chunk == ALL_CHUNKS ? rows : chunk + 1;
    unsigned n_signs = (signs & SIGN_PLUS ? 1u : 0u) + (signs & SIGN_MINUS ? 1u : 0u);
    /* A bias direction leaves the array at its base weights: nothing to program per direction,
     * and nothing to restore before the next FORWARD. */
    bool bias_only = dist == DIST_BIAS;
    program_base(l);
    reply_begin(MSG_PERTURBED_FORWARD, id, ST_OK, n_signs * count * batch * outputs * 4);
    for (int sign = 1; sign >= -1; sign -= 2) {
        if (!(signs & (sign > 0 ? SIGN_PLUS : SIGN_MINUS)))
            continue;
        for (unsigned k = 0; k < count; k++) {
            uint32_t seed = get_u32(p + 20 + 4 * k);
            memcpy(row_bias, layers[l].bias, sizeof row_bias);
            if (bias_only) {
                for (unsigned row = first; row < last; row++)
                    perturb_bias(l, row, sign, eps);
            } else {
                for (unsigned row = first; row < last; row++) {
                    perturb_row(l, row, sign, dist, seed, eps);
                    array_program_row(l, row, row_cells);
                }
                counters.param_writes++;
            }
            for (uint32_t b = 0; b < batch; b++) {
                read_layer(l, &layers[l].input[b * NET_WIDTH[l]], row_bias, activations);
                for (unsigned i = 0; i < outputs; i++)
                    tx_f32(activations[i]);
            }
        }
    }
    reply_end();
    if (!bias_only)
        layers[l].programmed = false;
    counters.queries += (uint64_t)count * n_signs;
    return ST_OK;
}

static unsigned on_status(const uint8_t *p, uint32_t n, uint16_t id)
{
    (void)p;
    (void)n;
    reply_begin(MSG_STATUS, id, ST_OK, 56);
    tx_u32(error_count);
    tx_u32(0);
    tx_u64(counters.queries);
    tx_u64(counters.param_writes);
    tx_f64((double)counters.device_us / 1e6);
    tx_u64(counters.frames_received);
    tx_u64(counters.frames_rejected);
    tx_u64(0); /* no reply cache: every request is idempotent, so retries re-execute */
    reply_end();
    return ST_OK;
}

static unsigned on_error(const uint8_t *p, uint32_t n, uint16_t id)
{
    (void)p;
    (void)n;
    int32_t code = 0;
    const char *text = "No error";
    if (error_count) {
        code = errors[error_first].code;
        text = errors[error_first].text;
    }
    uint32_t len = (uint32_t)strlen(text);
    reply_begin(MSG_ERROR, id, ST_OK, 4 + len);
    tx_u32((uint32_t)code);
    tx(text, len);
    reply_end();
    if (error_count) {
        error_first = (error_first + 1) % ERROR_QUEUE;
        error_count--;
    }
    return ST_OK;
}

static unsigned on_reset(const uint8_t *p, uint32_t n, uint16_t id)
{
    (void)p;
    (void)n;
    reboot();
    reply_empty(MSG_RESET, id, ST_OK);
    return ST_OK;
}

static unsigned on_ping(const uint8_t *p, uint32_t n, uint16_t id)
{
    reply_begin(MSG_PING, id, ST_OK, n);
    tx(p, n);
    reply_end();
    return ST_OK;
}

typedef unsigned (*handler)(const uint8_t *payload, uint32_t n, uint16_t id);

static const handler HANDLERS[] = {
    [MSG_HELLO] = on_hello,         [MSG_INFO] = on_info,
    [MSG_SET_PARAMS] = on_set_params, [MSG_SET_INPUT] = on_set_input,
    [MSG_FORWARD] = on_forward,     [MSG_PERTURBED_FORWARD] = on_perturbed_forward,
    [MSG_STATUS] = on_status,       [MSG_ERROR] = on_error,
    [MSG_RESET] = on_reset,         [MSG_PING] = on_ping,
};

/* ---- frames ----------------------------------------------------------------------------- */

static void handle(uint8_t type, uint16_t id, const uint8_t *payload, uint32_t n)
{
    handler h = type < sizeof HANDLERS / sizeof HANDLERS[0] ? HANDLERS[type] : 0;
    bool measures = type == MSG_FORWARD || type == MSG_PERTURBED_FORWARD;
    uint32_t started = board_micros();
    unsigned status = h ? h(payload, n, id) : fail(ST_UNKNOWN_TYPE, "unknown message type");
    if (measures)
        counters.device_us += (uint32_t)(board_micros() - started);
    if (status != ST_OK) {
        push_error((int32_t)status, failure);
        reply_empty(type, id, (uint16_t)status);
    }
}

/* A complete frame's decoded bytes: checked as section 2 says, then answered. */
static void frame_complete(void)
{
    size_t len = decoder.length;
    if (!cobs_decoder_done(&decoder) || len < HEADER_SIZE + CRC_SIZE ||
        crc32_final(crc32_update(CRC32_INIT, rx, len - CRC_SIZE)) != get_u32(rx + len - CRC_SIZE) ||
        get_u32(rx + 8) != len - HEADER_SIZE - CRC_SIZE || rx[0] != HIL_PROTOCOL_VERSION) {
        counters.frames_rejected++;
        return;
    }
    counters.frames_received++;
    handle(rx[1], get_u16(rx + 2), rx + HEADER_SIZE, (uint32_t)(len - HEADER_SIZE - CRC_SIZE));
}

void hil_device_init(void)
{
    cobs_decoder_init(&decoder, rx, sizeof rx);
    cobs_encoder_init(&encoder, board_write);
    rx_seen = false;
    memset(&counters, 0, sizeof counters);
    reboot();
}

void hil_device_poll(void)
{
    static uint8_t buf[64];
    size_t n = board_read(buf, sizeof buf);
    if (n)
        hil_device_feed(buf, n);
}

void hil_device_feed(const uint8_t *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] != 0) {
            cobs_decoder_put(&decoder, data[i]);
            rx_seen = true;
            continue;
        }
        if (rx_seen)
            frame_complete();
        cobs_decoder_reset(&decoder);
        rx_seen = false;
    }
}
