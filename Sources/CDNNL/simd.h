// Vector width for SwiftUNet's own kernels, written once and built per ISA.
//
// A kernel source (a *_impl.h file) is included by one small .c file per ISA, which defines VW
// (floats per vector: 8 for AVX2, 16 for AVX-512; 4 for the losses' baseline x86-64 build), includes
// this header and pushes the matching target attribute over the kernel's functions. The kernel speaks
// only of `vf`, VW and the helpers below, so one source serves every width; SFX(name) gives each
// width's entry points their own names (name_sse, name_avx2, name_avx512).
#ifndef VW
#error "define VW (4, 8 or 16) before including simd.h"
#endif
#include <stdint.h>

#if VW == 4
#define SFX(name) name##_sse
#elif VW == 8
#define SFX(name) name##_avx2
#elif VW == 16
#define SFX(name) name##_avx512
#else
#error "VW must be 4, 8 or 16"
#endif

/// One vector of VW floats (alignment as the hardware prefers; use LD/ST for memory).
typedef float vf __attribute__((vector_size(VW * 4)));
/// The same, for unaligned memory: blocked activations are aligned to their block, scratch rows
/// and plain weights need not be.
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));

#define LD(p) ((vf)(*(const vfu *)(p)))
#define ST(p, v) (*(vfu *)(p) = (v))
/// x in every lane. Written as x - (+0), which the compiler folds to a plain broadcast (a load with
/// broadcast, or the FMA's embedded one); x + 0 cannot fold (-0 + 0 is +0), and cost the GEMM inner
/// loops a scalar add and a register broadcast per element.
#define SPLAT(x) ((float)(x) - (vf){0})
/// Non-temporal store of a whole aligned vector (p aligned to VW * 4 bytes): bypasses the caches.
#define STNT(p, v) __builtin_nontemporal_store((v), (vf *)(p))
#define VMAX(a, b) __builtin_elementwise_max((a), (b))
