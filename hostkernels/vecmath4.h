/* vecmath.h on 4-lane vectors (v4_t, v4i_t; functions suffixed _4): what is left of a row after the wide loop
 * in rowwise.c, and llama.c's exp for softmax and SwiGLU. */
#ifndef GPUPORT_VECMATH4_H
#define GPUPORT_VECMATH4_H

#include "simd.h"

typedef float v4_t __attribute__((vector_size(16)));
typedef int32_t v4i_t __attribute__((vector_size(16)));

#define VT v4_t
#define VI v4i_t
#define VN 4
#define V(name) name##_4
#include "vecmath.h"
#undef VT
#undef VI
#undef VN
#undef V

#endif
