// HTTP Range without a Range-capable server: `gpuport export` stores big model files as fixed-size chunk
// files (models/<name>/model.safetensors.chunks/00000, ...). Once installed, fetch() answers a Range
// request for such a file from its chunk files (206 with Content-Range), so the progressive loader works
// unchanged on any static host (`python -m http.server` ignores Range). Other requests pass through.

function parseRange(header, size) {
  const m = /^bytes=(\d+)-(\d*)$/.exec(String(header).trim());
  if (!m) return null;
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  return start <= end ? { start, end } : null;
}

function requestHeaders(input, init) {
  return new Headers((init && init.headers) || (input instanceof Request ? input.headers : undefined));
}

/**
 * table: {absolute file URL: {size, chunk_size, chunks: absolute URL of its chunk folder}}.
 * Wraps globalThis.fetch (the one Pyodide's pyfetch calls); returns the table's size.
 */
export function serveRangesFromChunks(table) {
  const size = Object.keys(table || {}).length;
  if (size) globalThis.fetch = chunkedFetch(table);
  return size;
}

/** A fetch() that answers the table's files from their chunk files, and passes every other request to fetch(). */
export function chunkedFetch(table) {
  const files = new Map(Object.entries(table || {}));
  const original = globalThis.fetch.bind(globalThis);
  if (files.size === 0) return original;
  return async (input, init = {}) => {
    let url;
    try {
      url = new URL(input instanceof Request ? input.url : String(input), globalThis.location.href).href;
    } catch (e) {
      return original(input, init);
    }
    const file = files.get(url);
    if (!file) return original(input, init);
    const header = requestHeaders(input, init).get("range");
    const range = header ? parseRange(header, file.size) : { start: 0, end: file.size - 1 };
    if (!range) {
      return new Response("", { status: 416, headers: { "Content-Range": `bytes */${file.size}` } });
    }
    const first = Math.floor(range.start / file.chunk_size);
    const last = Math.floor(range.end / file.chunk_size);
    const options = { cache: init.cache, signal: init.signal };
    const parts = [];
    for (let i = first; i <= last; i++) {
      parts.push(original(new URL(String(i).padStart(5, "0"), file.chunks).href, options));
    }
    const responses = await Promise.all(parts);
    const failed = responses.find((r) => !r.ok);
    if (failed) return new Response(`chunk ${failed.url}: HTTP ${failed.status}`, { status: failed.status });
    const body = new Uint8Array(range.end - range.start + 1);
    let offset = first * file.chunk_size;
    let at = 0;
    for (const r of responses) {
      const bytes = new Uint8Array(await r.arrayBuffer());
      const from = Math.max(0, range.start - offset);
      const to = Math.min(bytes.length, range.end + 1 - offset);
      body.set(bytes.subarray(from, to), at);
      at += to - from;
      offset += bytes.length;
    }
    if (at !== body.length) {
      return new Response(`short chunks for ${url}: ${at} of ${body.length} bytes`, { status: 502 });
    }
    const whole = !header;
    return new Response(body, {
      status: whole ? 200 : 206,
      headers: {
        "Content-Type": "application/octet-stream",
        "Content-Length": String(body.length),
        ...(whole ? {} : { "Content-Range": `bytes ${range.start}-${range.end}/${file.size}` }),
      },
    });
  };
}
