// The thin JS half of gpuport's browser backend: raw WebGPU calls, no kernel logic.
// Python (py/gpuport/backends/browser.py) holds integer handles; one submit() call encodes a whole
// batch of dispatches. Every GPU call runs inside error scopes; errors and compilation messages are
// collected per device and handed back with the next read(), so Python raises its typed errors.

export const VERSION = "0.1.0";   // gpuport's version: Python refuses a JS half of another release

const devices = new Map();   // handle -> per-device state
let nextDevice = 1;
export const stats = { calls: 0, byName: {} };

function count(name) {
  stats.calls += 1;
  stats.byName[name] = (stats.byName[name] || 0) + 1;
}

function state(dev) {
  const s = devices.get(dev);
  if (!s) throw new Error(`gpuport bridge: unknown or closed device ${dev}`);
  if (s.lost) throw Object.assign(new Error(`GPU device lost: ${s.lost.message}`), { name: "DeviceLost" });
  return s;
}

// Some implementations (Firefox/wgpu) report calls on a destroyed device as validation or even shader
// compilation errors whose text says so: those are a device loss.
function lostOr(kind, message) {
  return /device (is |was |has been )?lost|devicelost/i.test(String(message || "")) ? "device-lost" : kind;
}

function scoped(s, what, fn) {
  s.device.pushErrorScope("out-of-memory");
  s.device.pushErrorScope("validation");
  let result;
  try {
    result = fn();
  } finally {
    const validation = s.device.popErrorScope();
    const oom = s.device.popErrorScope();
    s.pending.push(validation.then((e) => e && { kind: lostOr("validation", e.message), label: what, text: e.message }));
    s.pending.push(oom.then((e) => e && { kind: lostOr("out-of-memory", e.message), label: what, text: e.message }));
  }
  return result;
}

// A byte view of Python data without copying it out of Pyodide's heap (PyProxy.getBuffer), or the
// typed array itself when JS passes one. Returns [bytes, release].
function bytesOf(data) {
  if (data && typeof data.getBuffer === "function") {
    const view = data.getBuffer("u8");
    return [view.data, () => view.release()];
  }
  return [data, () => {}];
}

function browserIdentity() {
  const nav = globalThis.navigator || {};
  const brands = nav.userAgentData ? nav.userAgentData.brands.map((b) => `${b.brand}/${b.version}`) : [];
  return { userAgent: nav.userAgent || "", brands, platform: nav.platform || "" };
}

function plainLimits(limits) {
  const out = {};
  for (const key in limits) if (typeof limits[key] === "number") out[key] = limits[key];
  return out;
}

// Opens an adapter and device. Returns plain data: handle, adapter info, features, limits, browser.
export async function open(options = {}) {
  count("open");
  const gpu = globalThis.navigator && globalThis.navigator.gpu;
  if (!gpu) return { error: "navigator.gpu is not available (WebGPU disabled or unsupported here)" };
  // console.debug (hidden at the console's default level): where a start stopped, in a host's log of every line (Firefox's
  // requestAdapter() in a worker has blocked the worker's thread for good: docs/testing.md)
  console.debug("gpuport: navigator.gpu.requestAdapter()");
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference || "high-performance" });
  if (!adapter) return { error: "navigator.gpu.requestAdapter() returned null (no usable adapter)" };
  const wanted = ["shader-f16", "subgroups", "timestamp-query"].filter((f) => adapter.features.has(f));
  const requiredLimits = {};
  if (options.limits === "adapter") {
    for (const key in adapter.limits) if (typeof adapter.limits[key] === "number") requiredLimits[key] = adapter.limits[key];
  }
  console.debug("gpuport: adapter.requestDevice()");
  const device = await adapter.requestDevice({ requiredFeatures: wanted, requiredLimits });
  console.debug("gpuport: the device is open");
  const info = adapter.info || {};
  const handle = nextDevice++;
  const s = { handle, device, buffers: new Map(), pipelines: new Map(), nextId: 1, pending: [], staging: [], lost: null };
  devices.set(handle, s);
  device.lost.then((why) => { s.lost = { reason: why.reason, message: why.message || String(why.reason) }; });
  return {
    handle,
    adapter: {
      vendor: info.vendor || "", architecture: info.architecture || "", device: info.device || "",
      description: info.description || "",
      is_fallback: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false),
    },
    features: [...device.features],
    limits: plainLimits(device.limits),
    browser: browserIdentity(),
  };
}

// A storage buffer under Python's id; `data` (a view of Pyodide memory) is copied in when given.
function makeBuffer(s, id, nbytes, data) {
  const size = Math.max(4, Math.ceil(nbytes / 4) * 4);
  const buffer = scoped(s, `buffer of ${nbytes} bytes`, () => {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const b = s.device.createBuffer({ size, usage, mappedAtCreation: Boolean(data) });
    if (data) {
      const [bytes, release] = bytesOf(data);
      try { new Uint8Array(b.getMappedRange()).set(bytes); } finally { release(); }
      b.unmap();
    }
    return b;
  });
  s.buffers.set(id, buffer);
}

const bufferTypes = { read: "read-only-storage", rw: "storage", error: "storage", uniform: "uniform" };

// The explicit layout of gpuport's own kernels ({layout, bgl}), or "auto" for a user's WGSL.
function pipelineLayout(s, bindings) {
  if (!bindings) return { layout: "auto", bgl: null };
  const bgl = s.device.createBindGroupLayout({
    entries: bindings.map((b, i) => ({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: bufferTypes[b] } })),
  });
  return { layout: s.device.createPipelineLayout({ bindGroupLayouts: [bgl] }), bgl };
}

// A compile error record from getCompilationInfo()'s error messages (line:column per message).
function compileError(label, errors) {
  return {
    kind: "compile", label,
    text: errors.map((m) => `${label}:${m.lineNum}:${m.linePos}: ${m.message}`).join("\n"),
    messages: errors.map((m) => ({ line: m.lineNum, column: m.linePos, text: m.message })),
  };
}

// A compute pipeline; compile messages are gathered asynchronously and reported by the next read().
export function createPipeline(dev, source, entryPoint, constants, bindings, label) {
  count("createPipeline");
  const s = state(dev);
  const id = s.nextId++;
  const entry = scoped(s, `pipeline ${label}`, () => {
    const module = s.device.createShaderModule({ code: source, label });
    s.pending.push(module.getCompilationInfo().then((info) => {
      const errors = info.messages.filter((m) => m.type === "error");
      if (!errors.length) return null;
      if (errors.every((m) => lostOr("compile", m.message) === "device-lost")) {
        return { kind: "device-lost", label, text: errors[0].message };
      }
      return compileError(label, errors);
    }));
    const { layout, bgl } = pipelineLayout(s, bindings);
    const pipeline = s.device.createComputePipeline({ layout, label, compute: { module, entryPoint, constants } });
    return { pipeline, bgl: bgl || pipeline.getBindGroupLayout(0) };
  });
  s.pipelines.set(id, entry);
  return id;
}

// The same, with createComputePipelineAsync (precompilation: many in flight at once, off the main
// path). Resolves to {id} or {id: null, error} with the compiler's messages; never rejects.
export async function createPipelineAsync(dev, source, entryPoint, constants, bindings, label) {
  count("createPipelineAsync");
  const s = state(dev);
  const module = s.device.createShaderModule({ code: source, label });
  const { layout, bgl } = pipelineLayout(s, bindings);
  try {
    const pipeline = await s.device.createComputePipelineAsync({ layout, label, compute: { module, entryPoint, constants } });
    const id = s.nextId++;
    s.pipelines.set(id, { pipeline, bgl: bgl || pipeline.getBindGroupLayout(0) });
    return { id };
  } catch (e) {
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    return { id: null, error: errors.length ? compileError(label, errors) : { kind: "validation", label, text: e.message, messages: [] } };
  }
}

// Encodes and submits batch number `seq` (errors of it are labelled "batch <seq> of N dispatches"):
// [[pipelineId, x, y, z, [bufferIds], uniformOffset (-1: none), uniformSize], ...].
// `creates` ([[id, nbytes], ...]) are the output buffers Python allocated since the last submit; all
// the batch's uniforms arrive as one byte array, each struct at a 256-byte aligned offset; `release`
// lists buffer ids Python no longer references: destroyed after the submit. With `stampsId` >= 0 each
// dispatch gets a pass of its own whose begin/end timestamps are resolved into buffer `stampsId`.
// creates: [id, nbytes, offset] per buffer made before the batch runs, its initial bytes at `offset` in `uploads`
// (-1: none): a step's small uploads (positions, token ids) ride its one submit instead of a crossing each.
export function submit(dev, seq, creates, batch, uniforms, release, stampsId = -1, uploads = null) {
  count("submit");
  const s = state(dev);
  const [bytes, free] = uploads ? bytesOf(uploads) : [null, () => {}];
  try {
    for (const [id, nbytes, offset] of creates) {
      makeBuffer(s, id, nbytes, offset >= 0 ? bytes.subarray(offset, offset + nbytes) : null);
    }
  } finally { free(); }
  if (!batch.length) { releaseBuffers(s, release); return; }
  scoped(s, `batch ${seq} of ${batch.length} dispatches`, () => {
    let ubuf = null;
    if (uniforms) {
      const [bytes, release] = bytesOf(uniforms);
      try {
        ubuf = s.device.createBuffer({ size: bytes.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
        s.device.queue.writeBuffer(ubuf, 0, bytes);
      } finally { release(); }
    }
    const timed = stampsId >= 0;
    const querySet = timed ? s.device.createQuerySet({ type: "timestamp", count: 2 * batch.length }) : null;
    const encoder = s.device.createCommandEncoder();
    let pass = null;
    batch.forEach(([pid, x, y, z, ids, uoff, usize], i) => {
      if (timed) {
        pass = encoder.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i,
                                                             endOfPassWriteIndex: 2 * i + 1 } });
      } else if (!pass) {
        pass = encoder.beginComputePass();
      }
      const { pipeline, bgl } = s.pipelines.get(pid);
      const entries = ids.map((id, j) => ({ binding: j, resource: { buffer: s.buffers.get(id) } }));
      if (uoff >= 0) entries.push({ binding: ids.length, resource: { buffer: ubuf, offset: uoff, size: usize } });
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, s.device.createBindGroup({ layout: bgl, entries }));
      pass.dispatchWorkgroups(x, y, z);
      if (timed) pass.end();
    });
    if (!timed) pass.end();
    if (timed) {
      const stamps = s.device.createBuffer({ size: 16 * batch.length, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      encoder.resolveQuerySet(querySet, 0, 2 * batch.length, stamps, 0);
      s.buffers.set(stampsId, stamps);
    }
    s.device.queue.submit([encoder.finish()]);
    if (ubuf) ubuf.destroy();
    if (querySet) querySet.destroy();
  });
  releaseBuffers(s, release);
}

function releaseBuffers(s, ids) {
  for (const id of ids || []) {
    const b = s.buffers.get(id);
    if (b) { b.destroy(); s.buffers.delete(id); }
  }
}

async function drainErrors(s) {
  const found = [];
  while (s.pending.length) {
    // A lost device may reject its error scopes: that is a device loss, not a failed read.
    const batch = s.pending.splice(0).map((p) => p.catch((e) => ({ kind: "device-lost", label: "device", text: String(e && e.message || e) })));
    for (const e of await Promise.all(batch)) if (e) found.push(e);
  }
  return found;
}

// After a call on a destroyed device failed: was it lost? (device.lost resolves shortly after destroy()).
async function settledLost(s) {
  if (s.lost) return true;
  await Promise.race([s.device.lost, new Promise((r) => setTimeout(r, 250))]);
  return Boolean(s.lost);
}

// MAP_READ staging buffers are pooled per device: each read owns one until it is unmapped, so reads
// that overlap (two awaits in flight) never share one, and sequential reads reuse them.
function takeStaging(s, size) {
  let best = -1;
  for (let i = 0; i < s.staging.length; i++) {
    if (s.staging[i].size >= size && (best < 0 || s.staging[i].size < s.staging[best].size)) best = i;
  }
  if (best >= 0) return s.staging.splice(best, 1)[0];
  return s.device.createBuffer({ size: Math.max(size, 65536), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
}

function giveStaging(s, buffer) {
  if (!devices.has(s.handle) || s.staging.length >= 4) buffer.destroy();
  else s.staging.push(buffer);
}

// Copies buffers back through one staging buffer: `reads` is [[bufferId, nbytes], ...], all copied by one
// submission and mapped once. Returns {data: [Uint8Array per read], errors}: errors (compile, validation,
// out-of-memory) gathered since the last read, so Python raises them now.
export async function read(dev, reads) {
  count("read");
  const s = state(dev);
  const offsets = [];
  let size = 0;
  for (const [, nbytes] of reads) { offsets.push(size); size += Math.ceil(Math.max(nbytes, 4) / 8) * 8; }
  let data = null;
  const errors = await drainErrors(s);
  if (!errors.length) {
    const staging = takeStaging(s, size);
    try {
      scoped(s, "readback", () => {
        const encoder = s.device.createCommandEncoder();
        reads.forEach(([id, nbytes], i) => {
          encoder.copyBufferToBuffer(s.buffers.get(id), 0, staging, offsets[i], Math.ceil(nbytes / 4) * 4);
        });
        s.device.queue.submit([encoder.finish()]);
      });
      errors.push(...await drainErrors(s));
      if (!errors.length) {
        try {
          await staging.mapAsync(GPUMapMode.READ, 0, size);
        } catch (e) {
          if (!(await settledLost(s))) throw e;
        }
        if (!s.lost) {
          const mapped = staging.getMappedRange(0, size);
          data = reads.map(([, nbytes], i) => new Uint8Array(mapped.slice(offsets[i], offsets[i] + nbytes)));
          staging.unmap();
        }
      }
    } catch (e) {
      if (!(await settledLost(s))) throw e;
    } finally {
      giveStaging(s, staging);
    }
  }
  if (s.lost) errors.push({ kind: "device-lost", label: "device", text: s.lost.message });
  return { data, errors };
}

export function close(dev) {
  count("close");
  const s = devices.get(dev);
  if (!s) return;
  devices.delete(dev);
  for (const b of s.buffers.values()) b.destroy();
  for (const b of s.staging) b.destroy();
  s.device.destroy();
}

// Test hook: lose the device as a driver reset would (used by recovery tests).
export function loseDevice(dev) {
  count("loseDevice");
  state(dev).device.destroy();
}
