"""The `linalg` extension, and the main namespace's products (matmul, tensordot, vecdot).

The products run on the device: float32 matmul through gpuport's own tuned kernel (`rt.ops.matmul`, placed and
counted as its calls are: "matmul" in rt.info()["ran"]), the other dtypes through the generated product kernel;
vecdot, norms and traces are reductions of fused element-wise chains, diagonal is a view, outer and cross are lazy.
The factorisations and solvers (cholesky, det, eigh, eigvalsh, inv, pinv, qr, slogdet, solve, svd, svdvals,
matrix_rank, and the spectral matrix norms) have no device kernel: they run on the host (NumPy's LAPACK; svd SciPy's
where it is installed) wherever the arrays are, and placement says so (`rt.placement.host_only`, counted as
xp.linalg.<name> on the cpu).
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..platform import IN_PYODIDE
from ..tensor.tensor import Tensor
from . import dtypes as D
from . import kernels as K
from .core import Array, adopt, concrete, dispatched, fit, host_array, node, now, place, ran, runtime_of
from .device import upload
from .elementwise import abs as abs_
from .elementwise import apply, astype, broadcast_shapes, cast_node, multiply, not_equal, sqrt, subtract
from .graph import Expr, Store, Transform, View
from .manipulation import (broadcast_to, concat, expand_dims, matrix_transpose, normalize_axis,
                           permute_dims, reshape, transformed)
from .statistics import max as max_, min as min_, sum as sum_
from .statistics import sum_dtype

__all__ = ["cholesky", "cross", "det", "diagonal", "eigh", "eigvalsh", "inv", "matmul", "matrix_norm",
           "matrix_power", "matrix_rank", "matrix_transpose", "outer", "pinv", "qr", "slogdet", "solve", "svd",
           "svdvals", "tensordot", "trace", "vecdot", "vector_norm"]


class EighResult(NamedTuple):
    """eigh's result."""

    eigenvalues: Array
    eigenvectors: Array


class QRResult(NamedTuple):
    """qr's result."""

    Q: Array
    R: Array


class SlogdetResult(NamedTuple):
    """slogdet's result."""

    sign: Array
    logabsdet: Array


class SVDResult(NamedTuple):
    """svd's result."""

    U: Array
    S: Array
    Vh: Array


def _array(x: Any, name: str) -> Array:
    if not isinstance(x, Array):
        raise TypeError(f"{name} takes an array of gpuport.xp, got {type(x).__name__}")
    return x


# -- matmul -----------------------------------------------------------------------------------------------------

def matmul(x1: Array, x2: Array, /) -> Array:
    """The matrix product (1-D operands as a row or a column vector, squeezed after; stacks broadcast)."""
    x1, x2 = _array(x1, "matmul"), _array(x2, "matmul")
    if x1.ndim == 0 or x2.ndim == 0:
        raise ValueError("matmul: 0-D operands are not matrices (use multiply)")
    dtype = D.result_type(x1, x2)
    if not D.isdtype(dtype, "numeric"):
        raise TypeError(f"matmul takes numeric arrays, not {dtype}")
    a = expand_dims(x1, axis=0) if x1.ndim == 1 else x1
    b = expand_dims(x2, axis=-1) if x2.ndim == 1 else x2
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ: {x1.shape} @ {x2.shape}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    y = _product(a, b, batch, m, k, n, dtype)
    if x1.ndim == 1:
        y = y[..., 0, :]
    if x2.ndim == 1:
        y = y[..., 0]
    return y


def _product(a: Array, b: Array, batch: tuple[int, ...], m: int, k: int, n: int, dtype: np.dtype) -> Array:
    rt = runtime_of(a, b)
    shape = batch + (m, n)
    t0, before = now(), dispatched(rt)
    if 0 in shape or k == 0:   # nothing to multiply: zeros (an empty sum), made where arrays are made
        return adopt(rt, np.zeros(shape, dtype), dtype)
    if dtype == D.float32 and not rt.device.is_host:
        return _ops_matmul(rt, a, b, batch, shape)
    decision = place(rt, "matmul", [a, b], shape)
    if decision.on_host:
        y = adopt(rt, np.matmul(np.asarray(host_array(a, "matmul"), dtype), np.asarray(host_array(b, "matmul"), dtype)),
                  dtype)
    else:
        fit(rt, [a, b])
        ea = Expr(cast_node(node(broadcast_to(a, batch + (m, k)), batch + (m, k)), dtype), batch + (m, k))
        eb = Expr(cast_node(node(broadcast_to(b, batch + (k, n)), batch + (k, n)), dtype), batch + (k, n))
        y = Array(rt, View.whole(K.matmul(rt, ea, eb, batch, m, k, n, dtype), shape))
    ran(rt, "matmul", decision, t0, [a, b], dispatched(rt) - before)
    return y


def _ops_matmul(rt: Any, a: Array, b: Array, batch: tuple[int, ...], shape: tuple[int, ...]) -> Array:
    """float32: gpuport's tuned matmul (placed by its own spec under auto; counted as "matmul")."""
    t0 = now()
    ta = _tensor(broadcast_to(a, batch + a.shape[-2:]) if a.shape[:-2] != batch else a)
    transposed = b.ndim == 2 and isinstance(b._data, View) and _is_transposed(b._data)
    if transposed:
        tb = _tensor(matrix_transpose(b))
    else:
        tb = _tensor(b if b.ndim == 2 or b.shape[:-2] == batch else broadcast_to(b, batch + b.shape[-2:]))
    out = rt.ops.matmul(ta, tb, transpose_b=transposed)
    y = _adopt_tensor(rt, out)
    rt.placement.ran("xp.matmul", rt.placement.last, t0, [a.shape, b.shape])
    return y


def _is_transposed(v: View) -> bool:
    """A 2-D view that is the transpose of a whole contiguous matrix of its store."""
    rows, cols = v.shape
    return v.offset == 0 and v.strides == (1, rows) and v.store.size == rows * cols and rows > 1 and cols > 1


def _tensor(x: Array) -> Tensor:
    """x's values as a float32 Tensor of its shape: its store's own buffer where x is the whole store in order (else a
    copy of x first). On a webgpu runtime the store is uploaded once and keeps its buffer; under auto a host store
    stays on the host, for the selector to place the product."""
    view = concrete(x)
    if not (view.contiguous and view.offset == 0 and view.store.size == x.size):
        view = concrete(Array(x.device, Expr(node(x, x.shape), x.shape), 1))
    store = view.store
    rt = x.device
    if store.tensor is None and rt.placement.auto is None:
        upload(store)
    if store.tensor is not None:
        return store.tensor.reshape(x.shape)
    return rt.tensor(np.asarray(store.host, dtype=np.float32).reshape(x.shape), copy=False)


def _adopt_tensor(rt: Any, t: Tensor) -> Array:
    """An ops result as an array: its host values, or its device buffer as a store (no copy)."""
    known = t.storage.values()
    if known is not None:
        # the host kernel's fresh output, held by this tensor alone (a reshaped view: not owndata, so adopt would
        # copy it: a second result's memory)
        return adopt(rt, known, D.float32, owned=known.flags.writeable)
    store = Store(rt, D.float32, t.size, tensor=t.reshape(max(t.size, 1)))
    return Array(rt, View.whole(store, t.shape))


def tensordot(x1: Array, x2: Array, /, *, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Array:
    """The sum of products over `axes` (the last N of x1 with the first N of x2, or the two lists given)."""
    x1, x2 = _array(x1, "tensordot"), _array(x2, "tensordot")
    if isinstance(axes, (int, np.integer)):
        count = operator.index(axes)
        if count < 0 or count > min(x1.ndim, x2.ndim):
            raise ValueError(f"tensordot: axes={count} for shapes {x1.shape} and {x2.shape}")
        a_axes, b_axes = list(range(x1.ndim - count, x1.ndim)), list(range(count))
    else:
        a_axes = [normalize_axis(a, x1.ndim) for a in axes[0]]
        b_axes = [normalize_axis(b, x2.ndim) for b in axes[1]]
    if len(a_axes) != len(b_axes) or any(x1.shape[i] != x2.shape[j] for i, j in zip(a_axes, b_axes)):
        raise ValueError(f"tensordot: the contracted axes of {x1.shape} and {x2.shape} differ")
    free_a = [i for i in range(x1.ndim) if i not in a_axes]
    free_b = [j for j in range(x2.ndim) if j not in b_axes]
    k = math.prod(x1.shape[i] for i in a_axes)
    a = reshape(permute_dims(x1, tuple(free_a + a_axes)), (math.prod(x1.shape[i] for i in free_a), k))
    b = reshape(permute_dims(x2, tuple(b_axes + free_b)), (k, math.prod(x2.shape[j] for j in free_b)))
    return reshape(matmul(a, b), tuple(x1.shape[i] for i in free_a) + tuple(x2.shape[j] for j in free_b))


def vecdot(x1: Array, x2: Array, /, *, axis: int = -1) -> Array:
    """The dot product of vectors along `axis` (of the broadcast shape): one reduction of the fused product."""
    x1, x2 = _array(x1, "vecdot"), _array(x2, "vecdot")
    shape = broadcast_shapes(x1.shape, x2.shape)
    axis = normalize_axis(axis, len(shape)) - len(shape)   # counted from the end: both operands align there
    if -axis > min(x1.ndim, x2.ndim) or x1.shape[axis] != x2.shape[axis]:
        raise ValueError(f"vecdot: no vectors of one length along axis {axis} of {x1.shape} and {x2.shape}")
    return sum_(multiply(x1, x2), axis=axis, dtype=D.result_type(x1, x2))


# -- device work of the extension ----------------------------------------------------------------------------------

def diagonal(x: Array, /, *, offset: int = 0) -> Array:
    """The `offset`-th diagonal of each matrix of x (a view)."""
    x = _array(x, "diagonal")
    if x.ndim < 2:
        raise ValueError("diagonal needs at least 2 axes")
    offset = operator.index(offset)
    rows, cols = x.shape[-2:]
    length = max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))

    def fn(o: int, s: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        start = offset * s[-1] if offset >= 0 else -offset * s[-2]
        return (o + start if length else o), s[:-2] + (s[-2] + s[-1],)
    return transformed(x, Transform(x.shape[:-2] + (length,), fn))


def trace(x: Array, /, *, offset: int = 0, dtype: Any = None) -> Array:
    """The sum of the `offset`-th diagonal of each matrix (sum's result dtype rules)."""
    return sum_(diagonal(x, offset=offset), axis=-1, dtype=sum_dtype(_array(x, "trace").dtype, dtype, "trace"))


def outer(x1: Array, x2: Array, /) -> Array:
    """The outer product of two vectors (lazy)."""
    x1, x2 = _array(x1, "outer"), _array(x2, "outer")
    if x1.ndim != 1 or x2.ndim != 1:
        raise ValueError("outer takes two 1-D arrays")
    return multiply(expand_dims(x1, axis=1), expand_dims(x2, axis=0))


def cross(x1: Array, x2: Array, /, *, axis: int = -1) -> Array:
    """The cross product of 3-vectors along `axis` (lazy: products of shifted views)."""
    x1, x2 = _array(x1, "cross"), _array(x2, "cross")
    shape = broadcast_shapes(x1.shape, x2.shape)
    if axis >= 0 or -axis > min(x1.ndim, x2.ndim):
        raise ValueError("cross: axis must be negative and within both arrays' axes")
    a, b = broadcast_to(x1, shape), broadcast_to(x2, shape)
    ax = normalize_axis(axis, len(shape))
    if shape[ax] != 3:
        raise ValueError(f"cross: the vectors along axis {axis} have {shape[ax]} elements, not 3")
    head = (slice(None),) * ax

    def c(x: Array, i: int) -> Array:
        return x[head + (slice(i, i + 1),)]
    parts = [subtract(multiply(c(a, (i + 1) % 3), c(b, (i + 2) % 3)), multiply(c(a, (i + 2) % 3), c(b, (i + 1) % 3)))
             for i in range(3)]
    return concat(parts, axis=ax)


def vector_norm(x: Array, /, *, axis: int | tuple[int, ...] | None = None, keepdims: bool = False,
                ord: int | float = 2) -> Array:
    """The vector p-norm over `axis` (all when None): reductions of a fused element-wise chain."""
    x = _array(x, "vector_norm")
    if x.dtype.kind != "f":
        raise TypeError(f"vector_norm takes a floating-point array, not {x.dtype}")
    a = abs_(x)
    if ord == 2:
        return sqrt(sum_(multiply(a, a), axis=axis, keepdims=keepdims))
    if ord == math.inf:
        return max_(a, axis=axis, keepdims=keepdims) if x.size else sum_(a, axis=axis, keepdims=keepdims)
    if ord == -math.inf:
        return min_(a, axis=axis, keepdims=keepdims)
    if ord == 0:
        return sum_(astype(not_equal(x, 0.0), x.dtype), axis=axis, keepdims=keepdims)
    if ord == 1:
        return sum_(a, axis=axis, keepdims=keepdims)
    p = float(ord)
    return apply("pow", (sum_(apply("pow", (a, p), "numeric"), axis=axis, keepdims=keepdims), 1.0 / p), "numeric")


# -- on the host: the factorisations and solvers --------------------------------------------------------------------

def _host(name: str, x: Array, *more: Array) -> tuple[Any, list[np.ndarray]]:
    """Placement's host decision for `name` (counted when done) and the operands' values as float32 (float16 is
    computed in float32: LAPACK has no half precision)."""
    x = _array(x, name)
    if x.dtype.kind != "f":
        raise TypeError(f"linalg.{name} takes floating-point arrays, not {x.dtype}")
    decision = x.device.placement.host_only(f"xp.linalg.{name}", "no device kernel: NumPy's LAPACK on the host")
    arrays = [np.asarray(host_array(a, f"linalg.{name}"), dtype=np.float32) for a in (x, *more)]
    return decision, arrays


def _done(name: str, x: Array, decision: Any, t0: float, values: np.ndarray, dtype: np.dtype) -> Array:
    x.device.placement.ran(f"xp.linalg.{name}", decision, t0, [x.shape])
    return adopt(x.device, np.asarray(values).astype(dtype), dtype)


def _square(x: Array, name: str) -> None:
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"linalg.{name} takes (stacks of) square matrices, got shape {x.shape}")


def cholesky(x: Array, /, *, upper: bool = False) -> Array:
    """The Cholesky factor of each symmetric positive-definite matrix (lower; upper=True: its transpose)."""
    t0 = now()
    _square(_array(x, "cholesky"), "cholesky")
    decision, (v,) = _host("cholesky", x)
    factor = np.linalg.cholesky(v)
    return _done("cholesky", x, decision, t0, np.swapaxes(factor, -1, -2) if upper else factor, x.dtype)


def det(x: Array, /) -> Array:
    """The determinant of each square matrix."""
    t0 = now()
    _square(_array(x, "det"), "det")
    decision, (v,) = _host("det", x)
    return _done("det", x, decision, t0, np.linalg.det(v), x.dtype)


def eigh(x: Array, /) -> EighResult:
    """Eigenvalues (ascending) and eigenvectors of each symmetric matrix."""
    t0 = now()
    _square(_array(x, "eigh"), "eigh")
    decision, (v,) = _host("eigh", x)
    w, q = np.linalg.eigh(v)
    return EighResult(_done("eigh", x, decision, t0, w, x.dtype), adopt(x.device, q.astype(x.dtype), x.dtype))


def eigvalsh(x: Array, /) -> Array:
    """The eigenvalues (ascending) of each symmetric matrix."""
    t0 = now()
    _square(_array(x, "eigvalsh"), "eigvalsh")
    decision, (v,) = _host("eigvalsh", x)
    return _done("eigvalsh", x, decision, t0, np.linalg.eigvalsh(v), x.dtype)


def inv(x: Array, /) -> Array:
    """The inverse of each square matrix."""
    t0 = now()
    _square(_array(x, "inv"), "inv")
    decision, (v,) = _host("inv", x)
    return _done("inv", x, decision, t0, np.linalg.inv(v), x.dtype)


def pinv(x: Array, /, *, rtol: float | Array | None = None) -> Array:
    """The Moore-Penrose pseudo-inverse of each matrix (singular values below rtol * the largest are dropped;
    default max(M, N) * eps)."""
    t0 = now()
    decision, (v,) = _host("pinv", x)
    cut = max(v.shape[-2:]) * float(np.finfo(np.float32).eps) if rtol is None else \
        (np.asarray(host_array(rtol, "linalg.pinv")) if isinstance(rtol, Array) else rtol)
    return _done("pinv", x, decision, t0, np.linalg.pinv(v, rcond=cut), x.dtype)


def matrix_rank(x: Array, /, *, rtol: float | Array | None = None) -> Array:
    """The rank of each matrix: singular values above rtol * the largest (default max(M, N) * eps)."""
    t0 = now()
    decision, (v,) = _host("matrix_rank", x)
    s = np.linalg.svd(v, compute_uv=False)
    tol = max(v.shape[-2:]) * float(np.finfo(np.float32).eps) if rtol is None else \
        (np.asarray(host_array(rtol, "linalg.matrix_rank")) if isinstance(rtol, Array) else rtol)
    big = s.max(axis=-1, keepdims=True) if s.size else s
    rank = np.count_nonzero(s > np.asarray(tol)[..., None] * big, axis=-1)
    return _done("matrix_rank", x, decision, t0, rank, D.DEFAULT_INT)


def qr(x: Array, /, *, mode: str = "reduced") -> QRResult:
    """Q (orthonormal columns) and R (upper triangular) of each matrix; mode "reduced" or "complete"."""
    if mode not in ("reduced", "complete"):
        raise ValueError(f"linalg.qr: mode must be 'reduced' or 'complete', not {mode!r}")
    t0 = now()
    decision, (v,) = _host("qr", x)
    q, r = np.linalg.qr(v, mode=mode)
    return QRResult(_done("qr", x, decision, t0, q, x.dtype), adopt(x.device, r.astype(x.dtype), x.dtype))


def slogdet(x: Array, /) -> SlogdetResult:
    """The sign and the natural log of the absolute value of each square matrix's determinant."""
    t0 = now()
    _square(_array(x, "slogdet"), "slogdet")
    decision, (v,) = _host("slogdet", x)
    sign, logdet = np.linalg.slogdet(v)
    return SlogdetResult(_done("slogdet", x, decision, t0, sign, x.dtype),
                         adopt(x.device, np.asarray(logdet).astype(x.dtype), x.dtype))


def solve(x1: Array, x2: Array, /) -> Array:
    """The solution of x1 @ x = x2 for each square x1 (x2 of shape (M,) is one vector; (..., M, K) a stack)."""
    t0 = now()
    _square(_array(x1, "solve"), "solve")
    x2 = _array(x2, "solve")
    decision, (a, b) = _host("solve", x1, x2)
    if b.ndim == 1:
        out = np.linalg.solve(a, b[..., None])[..., 0] if a.ndim == 2 else \
            np.linalg.solve(a, np.broadcast_to(b, a.shape[:-1])[..., None])[..., 0]
    else:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = np.linalg.solve(np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:]))
    return _done("solve", x1, decision, t0, out, D.result_type(x1, x2))


def svd(x: Array, /, *, full_matrices: bool = True) -> SVDResult:
    """U, the singular values (descending) and Vh of each matrix."""
    t0 = now()
    decision, (v,) = _host("svd", x)
    scipy_svd = _scipy_svd() if v.ndim == 2 and v.size else None
    if scipy_svd is not None and np.isfinite(v).all():
        u, s, vh = scipy_svd(v, full_matrices=full_matrices, check_finite=False)
    else:
        u, s, vh = np.linalg.svd(v, full_matrices=full_matrices)
    rt = x.device
    return SVDResult(_done("svd", x, decision, t0, u, x.dtype), adopt(rt, s.astype(x.dtype), x.dtype),
                     adopt(rt, vh.astype(x.dtype), x.dtype))


@functools.cache
def _scipy_svd() -> Any:
    """SciPy's svd where SciPy is installed natively (scikit-learn, the namespace's main user, needs it): the same
    LAPACK routine (gesdd) as NumPy's, 2-3x faster on a 2,000 x 64 float32 matrix here (4.5 against 10 ms: a PCA's
    whole fit). NumPy's stays for stacks, for what is not finite (its LinAlgError) and in Pyodide (not measured)."""
    if IN_PYODIDE:
        return None
    try:
        from scipy.linalg import svd as scipy_svd
    except ImportError:
        return None
    return scipy_svd


def svdvals(x: Array, /) -> Array:
    """The singular values (descending) of each matrix."""
    t0 = now()
    decision, (v,) = _host("svdvals", x)
    return _done("svdvals", x, decision, t0, np.linalg.svd(v, compute_uv=False), x.dtype)


def matrix_norm(x: Array, /, *, keepdims: bool = False, ord: int | float | str = "fro") -> Array:
    """A matrix norm of each matrix: "fro", 1, -1, inf, -inf on the device (reductions); "nuc", 2, -2 from the
    singular values, on the host."""
    x = _array(x, "matrix_norm")
    if x.ndim < 2 or x.dtype.kind != "f":
        raise ValueError("matrix_norm takes floating-point (stacks of) matrices")
    if ord in ("nuc", 2, -2):
        t0 = now()
        decision, (v,) = _host("matrix_norm", x)
        s = np.linalg.svd(v, compute_uv=False)
        out = s.sum(axis=-1) if ord == "nuc" else (s.max(axis=-1) if ord == 2 else s.min(axis=-1))
        out = out[..., None, None] if keepdims else out
        return _done("matrix_norm", x, decision, t0, out, x.dtype)
    if ord == "fro":
        return vector_norm(x, axis=(-2, -1), keepdims=keepdims)
    if ord in (1, -1, math.inf, -math.inf):
        inner, outer_axis = (-2, -1) if ord in (1, -1) else (-1, -2)
        sums = sum_(abs_(x), axis=inner, keepdims=True)
        pick = max_ if ord > 0 else min_
        y = pick(sums, axis=outer_axis, keepdims=True)
        return y if keepdims else reshape(y, x.shape[:-2])
    raise ValueError(f"matrix_norm: unsupported ord {ord!r}")


def matrix_power(x: Array, n: int, /) -> Array:
    """x multiplied by itself n times (products on the device; a negative n inverts first, on the host)."""
    x = _array(x, "matrix_power")
    _square(x, "matrix_power")
    n = operator.index(n)
    if n < 0:
        x, n = inv(x), -n
    result = None
    base = x
    while True:
        if n & 1:
            result = base if result is None else matmul(result, base)
        n >>= 1
        if not n:
            break
        base = matmul(base, base)
    if result is None:
        eye = np.broadcast_to(np.eye(x.shape[-1], dtype=x.dtype), x.shape)
        return adopt(x.device, np.array(eye), x.dtype)
    return result
