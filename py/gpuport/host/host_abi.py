"""The C ABI of gpuport's host kernels (hostkernels/*.c), listed once: each exported function's name, C
return and parameter types, and what it computes. Everything else that names the exports derives from this
table: native_kernels sets its ctypes signatures from it, wasm_module checks a built module's exports
(names and WebAssembly types) against it, and hostkernels/abi.h, the header every C source includes, is
generated from it, so clang rejects a definition that differs from its row (and, with
-Wmissing-prototypes, a non-static function the table lacks).

After changing a row, bump ABI and regenerate the header (`make` does it when this file is newer;
tests/host/test_host_abi.py fails while it is stale): `python3 py/gpuport/host/host_abi.py > hostkernels/abi.h`. The
module imports only the standard library, so it runs as a script before the virtualenv exists.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

ABI = 14  # what gp_abi() returns: bumped whenever a row below changes; a build with another is refused

HEADER = "hostkernels/abi.h"
REGENERATE = f"python3 py/gpuport/host/host_abi.py > {HEADER}"

# The C types the exports use, by how a value crosses into the kernels: a pointer is the address of a NumPy
# buffer (an i32 in wasm32, where the module shares Pyodide's memory; a void pointer to ctypes).
KINDS = {"void": "void", "int": "int", "float": "float", "float *": "pointer", "const float *": "pointer",
         "const uint8_t *": "pointer", "const int8_t *": "pointer", "const int *": "pointer"}
WASM_TYPES: dict[str, tuple[str, ...]] = {"void": (), "int": ("i32",), "float": ("f32",), "pointer": ("i32",)}
_PARAM = re.compile(r"(?P<type>(?:const )?\w+(?: \*)?) ?(?P<name>\w+)")
_WIDTH = 110  # the C sources' line length


@dataclass(frozen=True)
class Param:
    """One C parameter: its type (a key of KINDS) and its name."""

    ctype: str
    name: str

    @property
    def kind(self) -> str:
        """How it crosses into the kernels: int, float or pointer."""
        return KINDS[self.ctype]

    def c(self) -> str:
        """The parameter as C writes it: "int n", "const float *x"."""
        return f"{self.ctype}{self.name}" if self.ctype.endswith("*") else f"{self.ctype} {self.name}"


@dataclass(frozen=True)
class Export:
    """One exported kernel function: its C return type ("int" or "void"), parameters and what it does."""

    returns: str
    name: str
    params: tuple[Param, ...]
    doc: str

    @property
    def result_kind(self) -> str:
        """What comes back: void or int."""
        return KINDS[self.returns]

    def wasm_type(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(parameter types, result types) as WebAssembly value types in the wasm32 build."""
        return sum((WASM_TYPES[p.kind] for p in self.params), ()), WASM_TYPES[self.result_kind]

    def prototype(self) -> str:
        """The C declaration, wrapped at the sources' line length, without attributes or semicolon."""
        head = f"{self.returns} {self.name}("
        if not self.params:
            return head + "void)"
        parts = [p.c() + "," for p in self.params[:-1]] + [self.params[-1].c() + ")"]
        lines = [head + parts[0]]
        for part in parts[1:]:
            if len(lines[-1]) + 1 + len(part) > _WIDTH:
                lines.append(" " * len(head) + part)
            else:
                lines[-1] += " " + part
        return "\n".join(lines)


def _export(returns: str, name: str, params: str, doc: str) -> Export:
    """A row from C's own spelling of the parameter list; an unknown type is an error here, at import."""
    parsed = []
    for text in filter(None, (t.strip() for t in params.split(","))):
        m = _PARAM.fullmatch(text)
        if m is None or m["type"] not in KINDS or KINDS[m["type"]] == "void":
            raise ValueError(f"{name}: parameter {text!r} is none of the types {sorted(KINDS)}")
        parsed.append(Param(m["type"], m["name"]))
    if returns not in ("int", "void"):
        raise ValueError(f"{name}: returns {returns!r}, not int or void")
    return Export(returns, name, tuple(parsed), doc)


EXPORTS: tuple[Export, ...] = (
    _export("int", "gp_abi", "",
            "The ABI version the build implements (ABI): the Python side refuses a build with another."),
    _export("int", "gp_packed_size", "int K, int N",
            "Floats a packed K x N matrix takes (the size of gp_pack_b's buffer)."),
    _export("void", "gp_pack_b", "const float *b, int K, int N, int transpose_b, const float *bias, float *packed",
            "Packs B (K x N, or N x K when transpose_b) and an optional bias row into matmul panels."),
    _export("void", "gp_matmul_packed",
            "const float *a, int M, int K, int lda, const float *packed, int N, float *c, int ldc",
            "C (M x N, row stride ldc) = A (M x K, row stride lda) @ packed B, plus the bias packed with it."),
    _export("void", "gp_matmul_batched",
            "const float *a, const float *b, const float *bias, float *c, int batch, int M, int K, int N, "
            "int transpose_b, int stride_a, int stride_b, int stride_c, float *scratch",
            "`batch` products C[i] = A[i] @ B[i] (+ bias), each B packed into scratch first; strides in floats."),
    _export("void", "gp_gelu", "const float *x, float *y, int n",
            "y = exact GELU of n floats of x, erf as the reference's (A&S 7.1.26)."),
    _export("void", "gp_quick_gelu", "const float *x, float *y, int n",
            "y = QuickGELU of n floats of x: x sigmoid(1.702 x), CLIP's activation."),
    _export("void", "gp_softmax",
            "const float *x, const float *mask, float *y, int rows, int n, int mask_div, int mask_mod",
            "Row-wise softmax of x (rows x n) plus mask row (r / mask_div) % mask_mod (mask NULL: none)."),
    _export("void", "gp_layer_norm",
            "const float *x, const float *gamma, const float *beta, float *y, int rows, int n, float eps",
            "Row-wise LayerNorm of x (rows x n): (x - mean) / sqrt(var + eps) * gamma + beta."),
    _export("int", "gp_attention_scratch", "int Sk, int d",
            "Floats of scratch gp_attention needs for Sk keys and heads d wide."),
    _export("void", "gp_attention",
            "const float *q, const float *k, const float *v, int ld, const float *mask, float *out, int ldo, "
            "int B, int Sq, int Sk, int heads, int d, int causal, float *scratch",
            "Multi-head softmax(q k^T / sqrt(d) + mask) v per batch and head (causal: query i sees keys 0..i); "
            "rows ld (out: ldo) floats apart."),
    _export("int", "gp_encoder_scratch", "int n, int S, int H, int heads, int F, int prefix, int threads",
            "Floats of scratch gp_encoder_layer needs for n tokens, sequences of S at most (a shared prefix's "
            "included), on `threads` threads."),
    _export("int", "gp_encoder_layer",
            "float *x, int B, int S, int H, int heads, int F, const float *mask, const int *lengths, int prefix, "
            "const float *wqkv, const float *wo, const float *wi, const float *wo2, const float *ln1_g, "
            "const float *ln1_b, const float *ln2_g, const float *ln2_b, float eps, int flags, float *scratch, "
            "int threads",
            "One encoder layer on x (B, S, H) in place, or on B sequences of `lengths` one after another (after "
            "`prefix` rows each begins with, causal only), post-norm or (flags 1) pre-norm, GELU or (2) QuickGELU, "
            "(4) causal, (8, 16) only each sequence's first or last row past the QKV product, returned as x's first "
            "B rows; returns the rows with non-finite norm statistics."),
    _export("int", "gp_q_scratch", "int M, int K",
            "Floats of scratch gp_q_matmul needs for M rows of K (their 8-bit quantized blocks)."),
    _export("void", "gp_q_matmul",
            "const float *x, int M, int K, const uint8_t *w, int kind, int N, float *y, int ldy, float *scratch, "
            "int threads",
            "Y (M x N, rows ldy apart) = X (M x K) W^T, W (N x K) ggml Q4_1 (kind 3) or Q8_0 (8) blocks as stored."),
    _export("int", "gp_llama_scratch", "int T, int S, int dim, int ffn, int threads",
            "Floats of scratch gp_llama_layer needs for T new positions, S in all, on `threads` threads."),
    _export("void", "gp_llama_layer",
            "float *x, int T, int start, int dim, int heads, int kv_heads, int ffn, float eps, const float *cos, "
            "const float *sin, const float *attn_norm, const uint8_t *wq, const uint8_t *wk, const uint8_t *wv, "
            "const uint8_t *wo, const float *ffn_norm, const uint8_t *w_gate, const uint8_t *w_up, "
            "const uint8_t *w_down, int kind, float *k_cache, float *v_cache, float *scratch, int threads",
            "One llama block on x (T, dim) at positions start.. in place, its keys/values written to the caches."),
    _export("void", "gp_matmul_threads",
            "const float *a, int M, int K, const float *packed, int N, float *c, int ldc, int threads",
            "C (M x N, rows ldc apart) = A (M x K) @ packed B (+ bias), its column panels shared over `threads`."),
    _export("void", "gp_project_q8",
            "const float *x, int K, const int8_t *w, const float *scale, int N, float *out, int threads",
            "out (N) = x (K) W^T for W (N x K) as int8 rows times their scales, its rows shared over `threads`: a "
            "large weight read at a quarter of its bytes, for a choice its caller checks against the float32 rows."),
    _export("int", "gp_decoder_scratch", "int T, int S, int H, int F, int threads",
            "Floats of scratch gp_decoder_layer needs for T new positions and at most S keys on `threads` threads."),
    _export("void", "gp_decoder_layer",
            "float *x, int T, int start, int H, int heads, int F, int S_enc, float eps, const float *ln1_g, "
            "const float *ln1_b, const float *wqkv, const float *wo, const float *lnx_g, const float *lnx_b, "
            "const float *wxq, const float *xk, const float *xv, const float *wxo, const float *ln2_g, "
            "const float *ln2_b, const float *wi, const float *wo2, float *k_cache, float *v_cache, float *scratch, "
            "int threads",
            "One pre-norm decoder layer (self-attention on the caches, cross-attention, GELU FFN) on x (T, H) in place."),
    _export("int", "gp_resample_scratch",
            "int w, int h, int out_w, int out_h, int x0, int y0, int cw, int ch, int filter, int vertical_first",
            "Floats of scratch gp_resample_image needs for that image, resize, crop, filter and order."),
    _export("void", "gp_resample_image",
            "const uint8_t *src, int w, int h, int bpp, int out_w, int out_h, int x0, int y0, int cw, int ch, "
            "int filter, int vertical_first, const float *table, float *out, float *scratch, int threads",
            "src (h, w, bpp) RGB or RGBA bytes resized to out_w x out_h as Pillow resizes (filter 2 bilinear, 3 bicubic; "
            "vertical_first: its vertical pass first), to the bit; the (ch, cw) crop from (x0, y0) (zero bytes "
            "outside) through table (3 x 256) into out (3, ch, cw)."),
    _export("int", "gp_greedy", "const float *logits, const float *bias, int n, float *sumexp",
            "The argmax of logits + bias (-1: a NaN, +inf or nothing finite) and the sum of e^(z - max) at *sumexp."),
)

_PREAMBLE = f"""\
/* The exports of gpuport's host kernels, generated from their one table (py/gpuport/host/host_abi.py): edit the
 * table, not this file, then `{REGENERATE}` (`make` does it;
 * tests/host/test_host_abi.py fails while this file is stale). Every source includes it (simd.h), so clang
 * checks each definition against the table. */
#ifndef GPUPORT_ABI_H
#define GPUPORT_ABI_H

/* Bumped whenever an exported signature changes; the Python wrapper refuses a module with another. */
#define GP_ABI {ABI}

/* Only the functions declared here are exported (the builds are -fvisibility=hidden): by name in
 * WebAssembly, natively as the ELF symbols of the same names. */
#ifdef __wasm__
#define GP_EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#else
#define GP_EXPORT(name) __attribute__((visibility("default")))
#endif
"""


def header(exports: tuple[Export, ...] = EXPORTS) -> str:
    """hostkernels/abi.h as the table (or `exports`, to see what the compiler makes of another) makes it."""
    decls = "".join(f"\n/* {e.doc} */\nGP_EXPORT({e.name})\n{e.prototype()};\n" for e in exports)
    return f"{_PREAMBLE}{decls}\n#endif\n"


if __name__ == "__main__":
    sys.stdout.write(header())
