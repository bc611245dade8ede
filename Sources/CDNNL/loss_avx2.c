// The losses (loss_impl.h) built for AVX2: 8 floats per vector.
#include "kernels.h"

#define VW 8
#include "simd.h"

#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#include "loss_impl.h"
#pragma clang attribute pop
