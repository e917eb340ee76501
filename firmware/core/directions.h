/* Seeded perturbation directions, firmware_protocol.md section 6: the host regenerates the
 * same vectors from the same seeds. */
#ifndef HIL_DIRECTIONS_H
#define HIL_DIRECTIONS_H

#include <stdint.h>

/* Distribution codes of PERTURBED_FORWARD. DIST_BIAS is not seeded: 1 on every element of a
 * layer's bias array, 0 on its weights, for every seed. */
enum { DIST_RADEMACHER = 0, DIST_GAUSSIAN = 1, DIST_SPHERE = 2, DIST_BIAS = 3, DIST_COUNT = 4 };

uint32_t dir_fmix32(uint32_t x);
/* Word k of a seed's stream; any word can be computed on its own. */
uint32_t dir_word(uint32_t seed, uint32_t k);
/* Element j (counted over the whole layer) of a rademacher direction: +1 or -1. */
int dir_rademacher(uint32_t seed, uint32_t j);
/* Element j of a gaussian direction (Box-Muller in double). */
double dir_gaussian(uint32_t seed, uint32_t j);

#endif
