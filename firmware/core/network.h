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

#endif
