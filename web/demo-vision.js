// The image half of the demo page: CLIP zero-shot classification of the images dropped or picked here.
// The logic is Python (gpuport.site.demo_vision.VisionDemo, in the page's Pyodide); this file reads the files, hands
// their bytes over (setArray, then add_image), polls the load's progress (per tower: text, vision) and draws.

const $ = (id) => document.getElementById(id);

const SETUP = (source) => `
from gpuport.site.demo_vision import VisionDemo
_vision = VisionDemo(rt, source=${JSON.stringify(source)})
_vision.load()
`;
const POLL = (seen) => `_vision.poll(${seen})`;
const ADD = (name) => `_vision.add_image(_vision_bytes, ${JSON.stringify(name)})`;
const CLASSIFY = (labels, template) =>
  `await _vision.classify(${JSON.stringify(labels)}, ${JSON.stringify(template)})`;

// A sample for ?vision=1: a drawn scene (sky, sun, ground) as PNG bytes, made here: the page ships no photograph.
async function samplePng() {
  const canvas = new OffscreenCanvas(320, 240);
  const g = canvas.getContext("2d");
  g.fillStyle = "#7ab8f5"; g.fillRect(0, 0, 320, 160);
  g.fillStyle = "#3f8f3a"; g.fillRect(0, 160, 320, 80);
  g.fillStyle = "#ffd23f"; g.beginPath(); g.arc(250, 60, 30, 0, 2 * Math.PI); g.fill();
  return new Uint8Array(await (await canvas.convertToBlob({ type: "image/png" })).arrayBuffer());
}

function figuresText(r) {
  const s = r.stats;
  const ms = (v) => (v === undefined || v === null ? "–" : `${v.toFixed(0)} ms`);
  return [`preprocess ${ms(s.preprocess_ms)}`, `vision ${ms(s.vision_ms)} on ${(s.vision_ran || []).join("+")}`,
          `text ${ms(s.text_ms)} on ${(s.text_ran || []).join("+") || "cache"}`,
          `${s.labels_computed ?? 0} new label embeddings`, `batch ${s.image_batch}`,
          `largest image buffer ${((s.largest_image_buffer || 0) / 2 ** 20).toFixed(1)} MiB`,
          `backend ${r.backend}`, `tier ${r.tier}`].join(" · ");
}

export function setupVisionDemo(ready, params) {
  const section = $("vision");
  const run = $("vision-run");
  const bar = $("vision-progress");
  const stage = $("vision-stage");
  const names = [];
  let setup = null, seen = 0;

  async function follow(gp) {   // the load's progress until both towers are in
    for (;;) {
      const r = await gp.runPython(POLL(seen));
      seen += r.events.length;
      const last = r.events[r.events.length - 1];
      if (last && last.percent !== null && last.percent !== undefined) bar.value = last.percent;
      const towers = Object.entries(r.ready).map(([t, ms]) => `${t} tower ready at ${(ms / 1000).toFixed(1)} s`);
      stage.textContent = r.error || [last ? `${last.stage}${last.component ? ` (${last.component})` : ""}` : "",
                                      ...towers].filter(Boolean).join(" · ");
      if (r.state !== "loading") {
        // a classification started meanwhile owns the state now (its "done" must not turn back into "ready")
        if (section.dataset.state === "idle") section.dataset.state = r.state;
        return r;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  async function start() {
    const gp = await ready;
    if (setup === null) {
      // ?model=<checkpoint URL> (a Hugging Face folder, or any Range URL) instead of the site's own
      const model = params.get("model");
      const source = model && model !== "1" ? model : new URL("models/clip-vit-base-patch32/", gp.base).href;
      setup = gp.runPython(SETUP(source)).then(() => follow(gp));
    }
    run.disabled = false;
    return gp;
  }

  async function add(gp, file, name) {
    await gp.setArray("_vision_bytes", file);
    await gp.runPython(ADD(name));
    names.push(name);
    $("vision-files-list").textContent = names.join(", ");
  }

  async function classify() {
    const gp = await start();
    run.disabled = true;
    section.dataset.state = "classifying";
    try {
      const labels = $("vision-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
      const r = await gp.runPython(CLASSIFY(labels, $("vision-template").value));
      const table = $("vision-results");
      table.innerHTML = "<tr><th>image</th><th>label</th><th>probability</th></tr>";
      for (const img of r.images) {
        for (const [i, [label, p]] of (img.top || [[img.error, 0]]).entries()) {
          const tr = document.createElement("tr");
          tr.innerHTML = `<td>${i === 0 ? img.name : ""}</td><td>${label}</td>` +
            `<td class="num">${(100 * p).toFixed(1)} %</td>`;
          table.append(tr);
        }
      }
      table.hidden = false;
      $("vision-figures").textContent = figuresText(r);
      section.dataset.state = "done";
    } catch (e) {
      stage.textContent = `${e.name}: ${e.message}`;
      section.dataset.state = "error";
    } finally {
      run.disabled = false;
    }
  }

  async function addFiles(files) {
    const gp = await start();
    for (const f of files) await add(gp, new Uint8Array(await f.arrayBuffer()), f.name);
  }

  $("vision-files").addEventListener("change", (e) => addFiles(e.target.files));
  const drop = $("vision-drop");
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
  run.addEventListener("click", classify);
  ready.then(() => { run.disabled = false; });
  if (params.get("vision") === "1") {
    start().then(async (gp) => { await add(gp, await samplePng(), "sample.png"); await classify(); });
  }
}
