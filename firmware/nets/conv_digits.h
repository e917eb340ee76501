/* A conv layer, then a dense one, on digits' 8x8 images: `make NET=nets/conv_digits.h`.
 * Layer 0 reads 3x3 patches of the image (a 9-row array, gain 2^-2 ~ 1/sqrt(9)) into 4 channels
 * and average-pools them to 4x4 maps (64 outputs); layer 1 is a dense 64 -> 64 array. */
#define NET_LAYERS 2
#define NET_WIDTHS {64, 64, 64}
#define NET_MAX_WIDTH 64
#define NET_GAIN_SHIFTS {2, 3}
#define NET_NAME "conv 4c3p2 + 64x64"
#define NET_CONVS {{1, 4, 8, 8, 3, 2}, {0, 0, 0, 0, 0, 0}}
