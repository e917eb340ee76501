/* The hardware boundary of the analog array: where a real board programs conductances through
 * its DACs and reads column currents through its ADCs. array_digital.c is the stand-in that
 * computes the same thing exactly, so a board answers forwards with no analog hardware. */
#ifndef HIL_ARRAY_H
#define HIL_ARRAY_H

#include <stdint.h>

/* Program one row (output unit) of a layer to `cells` (inputs values, 2^WEIGHT_FRAC = 1.0). */
void array_program_row(unsigned layer, unsigned row, const int16_t *cells);

/* Apply one input vector (inputs DAC codes, 2^INPUT_FRAC = 1.0) to a layer and read every row's
 * column sum, sum_j cell_ij * input_j, in units of 2^-(WEIGHT_FRAC + INPUT_FRAC). */
void array_read(unsigned layer, const int16_t *input, int64_t *sums);

#endif
