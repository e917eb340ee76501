#include "directions.h"

#include <math.h>

#define GOLDEN32 0x9E3779B9u
#define TWO_POW_32 4294967296.0
#define TWO_PI 6.283185307179586

uint32_t dir_fmix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

uint32_t dir_word(uint32_t seed, uint32_t k)
{
    return dir_fmix32(dir_fmix32(seed) + k * GOLDEN32);
}

int dir_rademacher(uint32_t seed, uint32_t j)
{
    return (dir_word(seed, j / 32) >> (j % 32)) & 1u ? 1 : -1;
}

double dir_gaussian(uint32_t seed, uint32_t j)
{
    double u1 = (dir_word(seed, 2 * j) + 0.5) / TWO_POW_32;
    double u2 = (dir_word(seed, 2 * j + 1) + 0.5) / TWO_POW_32;
    return sqrt(-2.0 * log(u1)) * cos(TWO_PI * u2);
}
