/* The exports of gpuport's host kernels, generated from their one table (py/gpuport/host/host_abi.py): edit the
 * table, not this file, then `python3 py/gpuport/host/host_abi.py > hostkernels/abi.h` (`make` does it;
 * tests/host/test_host_abi.py fails while this file is stale). Every source includes it (simd.h), so clang
 * checks each definition against the table. */
#ifndef GPUPORT_ABI_H
#define GPUPORT_ABI_H

/* Bumped whenever an exported signature changes; the Python wrapper refuses a module with another. */
#define GP_ABI 14

/* Only the functions declared here are exported (the builds are -fvisibility=hidden): by name in
 * WebAssembly, natively as the ELF symbols of the same names. */
#ifdef __wasm__
#define GP_EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#else
#define GP_EXPORT(name) __attribute__((visibility("default")))
#endif

/* The ABI version the build implements (ABI): the Python side refuses a build with another. */
GP_EXPORT(gp_abi)
int gp_abi(void);

/* Floats a packed K x N matrix takes (the size of gp_pack_b's buffer). */
GP_EXPORT(gp_packed_size)
int gp_packed_size(int K, int N);

/* Packs B (K x N, or N x K when transpose_b) and an optional bias row into matmul panels. */
GP_EXPORT(gp_pack_b)
void gp_pack_b(const float *b, int K, int N, int transpose_b, const float *bias, float *packed);

/* C (M x N, row stride ldc) = A (M x K, row stride lda) @ packed B, plus the bias packed with it. */
GP_EXPORT(gp_matmul_packed)
void gp_matmul_packed(const float *a, int M, int K, int lda, const float *packed, int N, float *c, int ldc);

/* `batch` products C[i] = A[i] @ B[i] (+ bias), each B packed into scratch first; strides in floats. */
GP_EXPORT(gp_matmul_batched)
void gp_matmul_batched(const float *a, const float *b, const float *bias, float *c, int batch, int M, int K,
                       int N, int transpose_b, int stride_a, int stride_b, int stride_c, float *scratch);

/* y = exact GELU of n floats of x, erf as the reference's (A&S 7.1.26). */
GP_EXPORT(gp_gelu)
void gp_gelu(const float *x, float *y, int n);

/* y = QuickGELU of n floats of x: x sigmoid(1.702 x), CLIP's activation. */
GP_EXPORT(gp_quick_gelu)
void gp_quick_gelu(const float *x, float *y, int n);

/* Row-wise softmax of x (rows x n) plus mask row (r / mask_div) % mask_mod (mask NULL: none). */
GP_EXPORT(gp_softmax)
void gp_softmax(const float *x, const float *mask, float *y, int rows, int n, int mask_div, int mask_mod);

/* Row-wise LayerNorm of x (rows x n): (x - mean) / sqrt(var + eps) * gamma + beta. */
GP_EXPORT(gp_layer_norm)
void gp_layer_norm(const float *x, const float *gamma, const float *beta, float *y, int rows, int n,
                   float eps);

/* Floats of scratch gp_attention needs for Sk keys and heads d wide. */
GP_EXPORT(gp_attention_scratch)
int gp_attention_scratch(int Sk, int d);

/* Multi-head softmax(q k^T / sqrt(d) + mask) v per batch and head (causal: query i sees keys 0..i); rows ld (out: ldo) floats apart. */
GP_EXPORT(gp_attention)
void gp_attention(const float *q, const float *k, const float *v, int ld, const float *mask, float *out,
                  int ldo, int B, int Sq, int Sk, int heads, int d, int causal, float *scratch);

/* Floats of scratch gp_encoder_layer needs for n tokens, sequences of S at most (a shared prefix's included), on `threads` threads. */
GP_EXPORT(gp_encoder_scratch)
int gp_encoder_scratch(int n, int S, int H, int heads, int F, int prefix, int threads);

/* One encoder layer on x (B, S, H) in place, or on B sequences of `lengths` one after another (after `prefix` rows each begins with, causal only), post-norm or (flags 1) pre-norm, GELU or (2) QuickGELU, (4) causal, (8, 16) only each sequence's first or last row past the QKV product, returned as x's first B rows; returns the rows with non-finite norm statistics. */
GP_EXPORT(gp_encoder_layer)
int gp_encoder_layer(float *x, int B, int S, int H, int heads, int F, const float *mask, const int *lengths,
                     int prefix, const float *wqkv, const float *wo, const float *wi, const float *wo2,
                     const float *ln1_g, const float *ln1_b, const float *ln2_g, const float *ln2_b,
                     float eps, int flags, float *scratch, int threads);

/* Floats of scratch gp_q_matmul needs for M rows of K (their 8-bit quantized blocks). */
GP_EXPORT(gp_q_scratch)
int gp_q_scratch(int M, int K);

/* Y (M x N, rows ldy apart) = X (M x K) W^T, W (N x K) ggml Q4_1 (kind 3) or Q8_0 (8) blocks as stored. */
GP_EXPORT(gp_q_matmul)
void gp_q_matmul(const float *x, int M, int K, const uint8_t *w, int kind, int N, float *y, int ldy,
                 float *scratch, int threads);

/* Floats of scratch gp_llama_layer needs for T new positions, S in all, on `threads` threads. */
GP_EXPORT(gp_llama_scratch)
int gp_llama_scratch(int T, int S, int dim, int ffn, int threads);

/* One llama block on x (T, dim) at positions start.. in place, its keys/values written to the caches. */
GP_EXPORT(gp_llama_layer)
void gp_llama_layer(float *x, int T, int start, int dim, int heads, int kv_heads, int ffn, float eps,
                    const float *cos, const float *sin, const float *attn_norm, const uint8_t *wq,
                    const uint8_t *wk, const uint8_t *wv, const uint8_t *wo, const float *ffn_norm,
                    const uint8_t *w_gate, const uint8_t *w_up, const uint8_t *w_down, int kind,
                    float *k_cache, float *v_cache, float *scratch, int threads);

/* C (M x N, rows ldc apart) = A (M x K) @ packed B (+ bias), its column panels shared over `threads`. */
GP_EXPORT(gp_matmul_threads)
void gp_matmul_threads(const float *a, int M, int K, const float *packed, int N, float *c, int ldc,
                       int threads);

/* out (N) = x (K) W^T for W (N x K) as int8 rows times their scales, its rows shared over `threads`: a large weight read at a quarter of its bytes, for a choice its caller checks against the float32 rows. */
GP_EXPORT(gp_project_q8)
void gp_project_q8(const float *x, int K, const int8_t *w, const float *scale, int N, float *out, int threads);

/* Floats of scratch gp_decoder_layer needs for T new positions and at most S keys on `threads` threads. */
GP_EXPORT(gp_decoder_scratch)
int gp_decoder_scratch(int T, int S, int H, int F, int threads);

/* One pre-norm decoder layer (self-attention on the caches, cross-attention, GELU FFN) on x (T, H) in place. */
GP_EXPORT(gp_decoder_layer)
void gp_decoder_layer(float *x, int T, int start, int H, int heads, int F, int S_enc, float eps,
                      const float *ln1_g, const float *ln1_b, const float *wqkv, const float *wo,
                      const float *lnx_g, const float *lnx_b, const float *wxq, const float *xk,
                      const float *xv, const float *wxo, const float *ln2_g, const float *ln2_b,
                      const float *wi, const float *wo2, float *k_cache, float *v_cache, float *scratch,
                      int threads);

/* Floats of scratch gp_resample_image needs for that image, resize, crop, filter and order. */
GP_EXPORT(gp_resample_scratch)
int gp_resample_scratch(int w, int h, int out_w, int out_h, int x0, int y0, int cw, int ch, int filter,
                        int vertical_first);

/* src (h, w, bpp) RGB or RGBA bytes resized to out_w x out_h as Pillow resizes (filter 2 bilinear, 3 bicubic; vertical_first: its vertical pass first), to the bit; the (ch, cw) crop from (x0, y0) (zero bytes outside) through table (3 x 256) into out (3, ch, cw). */
GP_EXPORT(gp_resample_image)
void gp_resample_image(const uint8_t *src, int w, int h, int bpp, int out_w, int out_h, int x0, int y0,
                       int cw, int ch, int filter, int vertical_first, const float *table, float *out,
                       float *scratch, int threads);

/* The argmax of logits + bias (-1: a NaN, +inf or nothing finite) and the sum of e^(z - max) at *sumexp. */
GP_EXPORT(gp_greedy)
int gp_greedy(const float *logits, const float *bias, int n, float *sumexp);

#endif
