/* Digital stand-in for the analog array: the programmed cells live in RAM and a read is an
 * exact integer matrix-vector product (SMLAL on a Cortex-M3). */
#include "array.h"

#include "network.h"

static int16_t cells[NET_LAYERS][NET_MAX_WIDTH][NET_MAX_WIDTH];

void array_program_row(unsigned layer, unsigned row, const int16_t *values)
{
    for (unsigned j = 0; j < net_array_inputs(layer); j++)
        cells[layer][row][j] = values[j];
}

void array_read(unsigned layer, const int16_t *input, int64_t *sums)
{
    unsigned n_in = net_array_inputs(layer), n_out = net_array_outputs(layer);
    for (unsigned i = 0; i < n_out; i++) {
        const int16_t *w = cells[layer][i];
        int64_t acc = 0;
        for (unsigned j = 0; j < n_in; j++)
            acc += (int64_t)w[j] * input[j];
        sums[i] = acc;
    }
}
