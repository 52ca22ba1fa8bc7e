/* WebAssembly's fused multiply-add roof on the CPU that runs it: relaxed SIMD's f32x4.relaxed_madd (an FMA on
 * x86-64 with FMA3 and on arm64) on independent accumulators, so no multiply-add waits for another. How many it
 * takes to keep both FMA ports busy depends on the engine's register allocation, so three counts are exported and a
 * bench takes the fastest (Node's V8 here, one thread: 12 accumulators 47 GFLOP/s, 24 55, 48 35 with spills).
 * Built into $(BENCH_DIR)/fma_roof.wasm by `make bench-setup`; measured in a page by bench/_roof.py. */
typedef float v4 __attribute__((vector_size(16)));

#define ROOF(ACC)                                                                         \
  __attribute__((export_name("fma_roof_" #ACC))) float fma_roof_##ACC(int iterations) {   \
    const v4 a = {1.0000001f, 0.9999999f, 1.0000002f, 0.9999998f};                       \
    const v4 b = {1e-7f, -1e-7f, 2e-7f, -2e-7f};                                          \
    v4 acc[ACC];                                                                          \
    for (int j = 0; j < ACC; j++) acc[j] = (v4){(float)j, 1.0f, 2.0f, 3.0f};              \
    for (int i = 0; i < iterations; i++) {                                                \
      _Pragma("clang loop unroll(full)") for (int j = 0; j < ACC; j++)                    \
        acc[j] = __builtin_wasm_relaxed_madd_f32x4(acc[j], a, b);                         \
    }                                                                                     \
    v4 s = acc[0];                                                                        \
    for (int j = 1; j < ACC; j++) s += acc[j];                                            \
    return s[0] + s[1] + s[2] + s[3];                                                     \
  }

ROOF(12)
ROOF(16)
ROOF(24)
