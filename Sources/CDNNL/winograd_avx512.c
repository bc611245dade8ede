// Winograd kernels (winograd_impl.h) built for AVX-512: blocked16, 16 floats per vector.
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#define VW 16
#include "simd.h"

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#include "winograd_impl.h"
#pragma clang attribute pop
