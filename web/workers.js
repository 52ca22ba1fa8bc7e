// A module worker from any origin: a script on another origin (gpuport embedded from a CDN) cannot be a
// worker's URL, so such a worker starts from a same-origin blob that imports it.
export function newWorker(url) {
  if (new URL(url).origin === globalThis.location.origin) return new Worker(url, { type: "module" });
  const source = new Blob([`import ${JSON.stringify(url)};\n`], { type: "text/javascript" });
  return new Worker(URL.createObjectURL(source), { type: "module" });
}
