"""The device strategies: each turns one op call placed on the device into kernel launches, looked up by
name in STRATEGY_RUNNERS. Deciding is placement's job; launch geometry is launches.py's."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..ops.kernels import ELEMENTWISE_WG, KernelDef, Launch
from ..ops.launches import (
    ACT_CODES,
    Part,
    attention_constants,
    attention_uniforms,
    kv_attention_uniforms,
    rb_matmul_launch,
    row_chunks,
    small_matmul_launch,
)
from ..ops.opspecs import OPS
from ..placement import Planner
from ..placement.telemetry import Telemetry
from ..tensor.tensor import Tensor
from ..types import Decision, OpCall

if TYPE_CHECKING:
    from ..runtime import Runtime


class Strategies:
    """Runs planned calls on one runtime's device, counting the work in its telemetry."""

    def __init__(self, rt: "Runtime", planner: Planner, telemetry: Telemetry) -> None:
        self.rt, self.planner, self.telemetry = rt, planner, telemetry

    def run(self, call: OpCall, plan: Decision) -> Tensor:
        if call.op == "matmul" and call.attrs.get("activation"):
            return self._matmul_activation(call, plan)
        return STRATEGY_RUNNERS[plan.strategy](self, call, plan)

    def _matmul_activation(self, call: OpCall, plan: Decision) -> Tensor:
        """A matmul with its activation (GELU) fused into the register-blocked kernel's epilogue where that
        kernel serves the call; under any other strategy the plain matmul, then the activation as an op of
        its own (planned like any, so blocks and limits hold)."""
        block = self.planner.matmul_block(call) if plan.strategy == "native" else None
        if block is not None:
            out = self._out(call)
            self._launch(rb_matmul_launch(block, *call.inputs, out, act=ACT_CODES[call.attrs["activation"]]))
            self.telemetry.add("fused_epilogues")
            return out
        plain = dataclasses.replace(call, attrs={k: v for k, v in call.attrs.items() if k != "activation"})
        product = STRATEGY_RUNNERS[plan.strategy](self, plain, plan)
        # the product lives only on the device, so its activation is planned onto the device too
        act = OpCall(call.attrs["activation"], ("x",), [product], product.shape, {})
        return self.run(act, self.planner.plan(act))

    # -- helpers --------------------------------------------------------------------------------------
    def _launch(self, launch: Launch) -> None:
        self.telemetry.binding(max((p.size * 4 for p in (*launch.inputs, launch.output) if p is not None),
                                   default=0))
        if launch.output.size:
            self.rt.device.run(launch)

    def _out(self, call: OpCall, bounds: list[int] | None = None) -> Tensor:
        out = self.rt.memory.alloc(call.out_shape, OPS[call.op].out_dtype, bounds=bounds)
        if out.blocked:
            self.telemetry.blocked_tensor()
        return out

    def _max_groups(self) -> int:
        return self.planner.limits.get("maxComputeWorkgroupsPerDimension", 65535)

    # -- the executors ------------------------------------------------------------------------------------
    def native(self, call: OpCall, plan: Decision, kernel: KernelDef | None = None, wg: int = ELEMENTWISE_WG) -> Tensor:
        out = self._out(call)
        block = self.planner.matmul_block(call) if call.op == "matmul" and kernel is None else None
        if block is not None:
            self._launch(rb_matmul_launch(block, *call.inputs, out))
            return out
        self._launch(OPS[call.op].launch(call.inputs, out, call.attrs, kernel=kernel, wg=wg,
                                         max_groups=self._max_groups()))
        return out

    def f16(self, call: OpCall, plan: Decision) -> Tensor:
        return self.native(call, plan, kernel=OPS[call.op].variants["f16"])

    def simplified_shader(self, call: OpCall, plan: Decision) -> Tensor:
        if call.op != "matmul":
            return self.native(call, plan, wg=self.planner.wg())
        a, b, bias = call.inputs
        out = self._out(call)
        m, k = a.shape[-2:]
        n = call.out_shape[-1]
        tb = call.attrs["transpose_b"]
        self._launch(small_matmul_launch(a, b, bias, out, transpose_b=tb, M=m, N=n, K=k, lda=k,
                                         ldb=k if tb else n, ldc=n, sa=m * k, sb=k * n if b.ndim > 2 else 0,
                                         sc=m * n, batch=math.prod(tuple(a.shape[:-2]))))
        return out

    def layer_decomposition(self, call: OpCall, plan: Decision) -> Tensor:
        """matmul over blocks: C row segments (where A's and C's blocks overlap) x weight blocks."""
        a, b, bias = call.inputs
        tb = bool(call.attrs["transpose_b"])
        k = a.shape[-1]
        n = call.out_shape[-1]
        rows = a.size // k if k else 0
        a_chunks = row_chunks(a, k)
        bounds = None
        if self.rt.memory.needs_blocks(rows * n * 4):
            per = max(1, self.planner.binding() // (n * 4))
            # every C block within one A block and within the budget
            row_bounds = sorted({0, rows} | {r for r0, r1, _ in a_chunks for r in (r0, r1)} | set(range(0, rows, per)))
            fixed = [0]
            for r in row_bounds[1:]:
                while r - fixed[-1] > per:
                    fixed.append(fixed[-1] + per)
                fixed.append(r)
            bounds = [r * n for r in fixed]
        out = self._out(call, bounds)
        w_chunks = row_chunks(b, b.shape[-1])
        ai = 0
        for c0, c1, ch in row_chunks(out, n):
            while a_chunks[ai][1] <= c0 and ai + 1 < len(a_chunks):
                ai += 1
            r = c0
            while r < c1:
                a0, a1, ah = a_chunks[ai]
                r_end = min(c1, a1)
                m = r_end - r
                a_part, c_part = Part(ah, ((a1 - a0) * k,)), Part(ch, ((c1 - c0) * n,))
                for wi, (w0, w1, wh) in enumerate(w_chunks):
                    w_part = Part(wh, ((w1 - w0) * b.shape[-1],))
                    if tb:   # weight rows are output columns: column blocks of C
                        launch = small_matmul_launch(a_part, w_part, bias, c_part, transpose_b=True, M=m, N=w1 - w0,
                                                     K=k, lda=k, ldb=k, ldc=n, a_off=(r - a0) * k, n_off=w0,
                                                     c_off=(r - c0) * n)
                    else:    # weight rows are K: split-K, accumulating into C after the first block
                        launch = small_matmul_launch(a_part, w_part, bias if wi == 0 else None, c_part,
                                                     transpose_b=False, M=m, N=n, K=w1 - w0, lda=k, ldb=n, ldc=n,
                                                     a_off=(r - a0) * k + w0, c_off=(r - c0) * n,
                                                     accumulate=wi > 0)
                    self._launch(launch)
                    self.telemetry.add("layer_operations")
                r = r_end
                if r < c1:
                    ai += 1
        return out

    def tiled(self, call: OpCall, plan: Decision) -> Tensor:
        x = call.inputs[0]
        blocks = x.blocks
        n = x.shape[-1]
        reduce = call.op in ("sum", "mean")
        out = self._out(call, [s // n for s in blocks.bounds] if reduce else list(blocks.bounds))
        wg = self.planner.wg()
        for i, (s, e, h) in enumerate(blocks.chunks()):
            shape = ((e - s) // n, n) if OPS[call.op].family == "rowwise" else (e - s,)
            parts: list[Any] = [Part(h, shape)]
            for t in call.inputs[1:]:
                if t is None:
                    parts.append(None)
                elif t.blocked:
                    parts.append(Part(t.blocks.buffers[i], shape))
                else:
                    parts.append(Part(t.buffer, t.shape))
            oh = out.blocks.buffers[i] if out.blocked else out.buffer
            out_part = Part(oh, (shape[0],) if reduce else shape)
            self._launch(OPS[call.op].launch(parts, out_part, call.attrs, wg=wg, max_groups=self._max_groups()))
            self.telemetry.add("tiles")
        return out

    def attention_dispatches(self, call: OpCall, plan: Decision) -> Tensor:
        """Attention in query chunks and head groups (chunked_attention, head_partitioning)."""
        q, k, v, mask = call.inputs
        batch, sq, hidden = q.shape
        heads = int(call.attrs["num_heads"])
        d = hidden // heads
        sk = k.shape[1]
        budget = self.planner.limits.get("maxAttentionScoresPerDispatch")
        out = self._out(call, list(q.blocks.bounds) if q.blocked else None)
        consts = attention_constants(mask, call.attrs)
        kernel = OPS["attention"].kernel
        if not q.blocked and (budget is None or batch * heads * sq * sk <= budget):
            self._launch(Launch(kernel, [q, k, v, mask], out, (sq, heads, batch), attention_uniforms(sq, sk, heads, d),
                                consts))
            return out
        # segments: (batch index, first query, end query, q handle, out handle, first row the buffers hold)
        for (r0, r1, qh), (_, _, oh) in zip(row_chunks(q, hidden), row_chunks(out, hidden)):
            for bi in range(r0 // sq, (r1 - 1) // sq + 1 if r1 > r0 else r0 // sq):
                i0, i1 = max(r0, bi * sq) - bi * sq, min(r1, (bi + 1) * sq) - bi * sq
                nq = i1 - i0
                qp, op_ = Part(qh, ((r1 - r0) * hidden,)), Part(oh, ((r1 - r0) * hidden,))
                if budget is None or heads * nq * sk <= budget:
                    groups = [(0, heads, i0, nq)]
                elif nq * sk <= budget:          # head partitioning: groups of heads, all queries
                    g = max(1, budget // (nq * sk))
                    groups = [(h0, min(g, heads - h0), i0, nq) for h0 in range(0, heads, g)]
                else:                            # query chunks, one head at a time
                    qc = max(1, budget // max(sk, 1))
                    groups = [(h0, 1, s0, min(qc, i1 - s0)) for h0 in range(heads) for s0 in range(i0, i1, qc)]
                for h0, nh, s0, cnt in groups:
                    self._launch(Launch(kernel, [qp, k, v, mask], op_, (cnt, nh, 1),
                                        attention_uniforms(sq, sk, heads, d, q0=s0, h0=h0, b0=bi, row_base=r0),
                                        consts))
                    self.telemetry.add("attention_dispatches")
        return out

    def partitioned_kv(self, call: OpCall, plan: Decision) -> Tensor:
        """kv_attention over a cache stored as blocks: one dispatch per block holding visible positions, the
        online softmax's (max, sum, acc) per (row, head) carried between them in a scratch buffer."""
        q, k, v, _ = call.inputs
        heads, kv_heads, start = (int(call.attrs[a]) for a in ("num_heads", "num_kv_heads", "start"))
        t, width = q.shape
        d = width // heads
        kw = k.shape[1]
        out = self._out(call)
        state = self.rt.memory.alloc((t * heads * (d + 2),), np.dtype(np.float32))
        blocks = [(s // kw, e // kw, kh, vh) for (s, e, kh), (_, _, vh) in zip(k.blocks.chunks(), v.blocks.chunks())
                  if s // kw < start + t]
        for i, (r0, r1, kh, vh) in enumerate(blocks):
            shape = ((r1 - r0) * kw,)
            self._launch(Launch(OPS["kv_attention"].kernel, [q, Part(kh, shape), Part(vh, shape), state], out,
                                (t, heads, 1), kv_attention_uniforms(t, heads, kv_heads, d, start, r0, r1 - r0, i == 0,
                                                      i == len(blocks) - 1)))
            self.telemetry.add("kv_blocks")
        return out


StrategyRunner = Callable[[Strategies, OpCall, Decision], Tensor]

STRATEGY_RUNNERS: dict[str, StrategyRunner] = {
    "native": Strategies.native, "f16": Strategies.f16, "simplified_shader": Strategies.simplified_shader,
    "layer_decomposition": Strategies.layer_decomposition, "tiled": Strategies.tiled,
    "chunked_attention": Strategies.attention_dispatches, "head_partitioning": Strategies.attention_dispatches,
    "partitioned_kv": Strategies.partitioned_kv,
}
