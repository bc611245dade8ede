// The losses (loss_impl.h) built for any x86-64 CPU (no target features: the fallback below AVX2): 4 floats per vector.
#include "kernels.h"

#define VW 4
#include "simd.h"

#include "loss_impl.h"
