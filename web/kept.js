// The copy of the site's snapshot file a browser keeps (web/snapshot.js keep): in the origin private file system
// (OPFS), named by its SHA-256, one file at a time. A module of its own because gpuport's Pyodide worker reads the
// kept copy the moment it starts (worker.js), before its boot's modules are in: read by the worker once the page's
// thread had found it (after the site's list) and the interpreter was in, it held a warm Chromium visit's boot
// 90-150 ms (read 14-56 ms, SHA-256 33-52, expand 15-40, after the OPFS lookups' 280-450 ms on a busy page thread).
import { sha256 } from "./idb.js";

const FOLDER = "gpuport-snapshots";

export async function folder(create) {
  if (!globalThis.navigator || !navigator.storage || typeof navigator.storage.getDirectory !== "function") return null;
  try {
    return await (await navigator.storage.getDirectory()).getDirectoryHandle(FOLDER, { create });
  } catch (e) {
    return null;   // none yet, or no OPFS here (a private window)
  }
}

/** The kept file's handle for the snapshot file whose SHA-256 is `sha256`, or null. */
export async function handleFor(sha256hex) {
  const kept = await folder(false);
  if (!kept) return null;
  try {
    return await kept.getFileHandle(`${sha256hex}.bin`);
  } catch (e) {
    return null;
  }
}

/** The kept file, whichever it is (the SHA-256 in its name, as `.bin`), without knowing the site's list: {name, handle}
 * or null. */
export async function lookup() {
  const kept = await folder(false);
  if (!kept) return null;
  for await (const [name, handle] of kept.entries()) if (name.endsWith(".bin") && handle.kind === "file") return { name, handle };
  return null;
}

// A dedicated worker (gpuport's Pyodide worker) reads the bytes in one synchronous call: in Chromium, warm,
// getFile().arrayBuffer() of 17.5 MB took 370 ms on a page thread busy with the boot's other files. Elsewhere, or
// where another tab holds the file's synchronous handle, through a File.
async function readBytes(handle) {
  if (typeof handle.createSyncAccessHandle === "function") {
    let access = null;
    try {
      access = await handle.createSyncAccessHandle();
      const bytes = new Uint8Array(access.getSize());
      if (access.read(bytes, { at: 0 }) === bytes.length) return bytes;
    } catch (e) {
      // locked by another tab, or not a dedicated worker: read through a File below
    } finally {
      if (access) access.close();
    }
  }
  return new Uint8Array(await (await handle.getFile()).arrayBuffer());
}

/** A kept file read and digested: {bytes, sha256} (hex; null where there is no crypto.subtle to digest with), or
 * {problem} when it cannot be read. */
export async function read(handle) {
  let bytes;
  try {
    bytes = await readBytes(handle);
  } catch (e) {
    return { problem: `the kept copy could not be read (${e.message})` };
  }
  const digests = await sha256([bytes]);
  return { bytes, sha256: digests && digests[0] };
}

export async function forget(sha256hex) {
  const kept = await folder(false);
  if (kept) await kept.removeEntry(`${sha256hex}.bin`).catch(() => {});
}
