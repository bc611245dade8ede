// The losses (loss_impl.h) built for AVX-512: 16 floats per vector.
#include "kernels.h"

#define VW 16
#include "simd.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#include "loss_impl.h"
#pragma clang attribute pop
