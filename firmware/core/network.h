/* The network this firmware serves: sizes, limits and number formats, fixed at compile time
 * (no dynamic allocation). The default fits scikit-learn's digits (64 inputs) in a 64 KiB part. */
#ifndef HIL_NETWORK_H
#define HIL_NETWORK_H

#ifndef NET_LAYERS
#define NET_LAYERS 2
#define NET_WIDTHS {64, 64, 64} /* input first: NET_LAYERS + 1 widths */
#define NET_MAX_WIDTH 64
/* gain of layer l is 2^-shift (1/sqrt(inputs) for 64 inputs): the periphery scales column sums
 * by a power of two, so the stand-in array applies it exactly. */
#define NET_GAIN_SHIFTS {3, 3}
#define NET_NAME "64x64x64" /* the topology, as the board's identity names it */
#endif

/* Conv layers: per layer {in_channels, out_channels, height, width, kernel, pool}, all zero for a
 * dense layer (the default). A conv layer's array has in_channels * kernel^2 rows (one zero-padded
 * patch, stride 1) and out_channels columns; its maps are average-pooled over pool x pool windows,
 * so its widths must be in_channels * height * width in and out_channels * (height / pool) *
 * (width / pool) out. nets/conv_digits.h is a build with one. */
#ifndef NET_CONVS
#define NET_CONVS {{0}}
#endif

#ifndef NET_MAX_BATCH
#define NET_MAX_BATCH 64 /* input vectors a layer holds: a whole training batch, sent once */
#endif
#ifndef NET_MAX_REQUEST
#define NET_MAX_REQUEST 2048 /* largest request payload, bytes */
#endif
#define NET_MAX_IN_FLIGHT 4 /* the link (pty, USB CDC) holds further requests until read */
#define NET_RESPONSE_MS 2000

/* Weights (and biases) in [-1, 1] are 16-bit cells with WEIGHT_FRAC fraction bits: resolution
 * 2^-14. Inputs reach the array through a 16-bit DAC with INPUT_FRAC fraction bits: range +-16,
 * step 2^-11 (a relu layer with gain 1/sqrt(inputs) and inputs in [0, 1] stays below 9). Column
 * sums come back exact in 64 bits. */
#define WEIGHT_FRAC 14
#define WEIGHT_ONE (1 << WEIGHT_FRAC)
#define INPUT_FRAC 11

typedef struct {
    unsigned in_channels, out_channels, height, width, kernel, pool;
} net_conv;

static const unsigned NET_WIDTH[NET_LAYERS + 1] = NET_WIDTHS; /* layer l: NET_WIDTH[l] in, [l + 1] out */
static const net_conv NET_CONV_SHAPES[NET_LAYERS] = NET_CONVS;

static inline int net_is_conv(unsigned l) { return NET_CONV_SHAPES[l].out_channels != 0; }

/* Rows (inputs) of layer l's array: its input width, or a conv layer's patch. */
static inline unsigned net_array_inputs(unsigned l)
{
    const net_conv *c = &NET_CONV_SHAPES[l];
    return net_is_conv(l) ? c->in_channels * c->kernel * c->kernel : NET_WIDTH[l];
}

/* Columns (outputs, chunks) of layer l's array: its output width, or a conv layer's channels. */
static inline unsigned net_array_outputs(unsigned l)
{
    return net_is_conv(l) ? NET_CONV_SHAPES[l].out_channels : NET_WIDTH[l + 1];
}

#endif
