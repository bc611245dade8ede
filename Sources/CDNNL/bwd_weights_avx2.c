// Backward-weights kernels (bwd_weights_impl.h) built for AVX2: blocked8, 8 floats per vector.
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#define VW 8
#include "simd.h"

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#include "bwd_weights_impl.h"
#pragma clang attribute pop
