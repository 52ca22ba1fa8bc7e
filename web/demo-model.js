// The model half of the demo page: MiniLM sentence embeddings loaded progressively (gpuport.loading.loader),
// a progress bar with its stages, per-stage timings, a similarity heatmap, and the tier that ran.
// Python runs wherever gpuport runs (Web Worker by default): progress is polled from a list it fills.

const $ = (id) => document.getElementById(id);

// The model's files sit beside gpuport's own (gp.base), wherever the page itself is served from.
const START = (source) => `
import asyncio, time
from gpuport import models
_demo = {"events": [], "error": None, "model": None, "t0": time.perf_counter()}
async def _demo_load():
    try:
        _demo["model"] = await models.load("minilm-l6-v2", rt, source=${JSON.stringify(source)},
                                           on_progress=_demo["events"].append)
    except Exception as e:
        _demo["error"] = f"{type(e).__name__}: {e}"
_demo_task = asyncio.ensure_future(_demo_load())
True
`;

const POLL = (from) => `
{"events": _demo["events"][${from}:], "error": _demo["error"], "done": _demo_task.done()}
`;

const EMBED = (texts) => `
import time, numpy as np
_texts = ${JSON.stringify(JSON.stringify(texts))}
import json as _json
_texts = _json.loads(_texts)
_t = time.perf_counter()
_emb = await _demo["model"].embed(_texts)
_ms = (time.perf_counter() - _t) * 1e3
{"sim": (_emb @ _emb.T).round(4).tolist(), "embed_ms": _ms, "tier": rt.tier, "backend": rt.backend,
 "stats": _demo["model"].load_stats}
`;

function heatColor(v) {
  // -1..1 -> white..deep blue (cosine of unit vectors)
  const x = Math.max(0, Math.min(1, (v + 0.2) / 1.2));
  const r = Math.round(255 - 215 * x), g = Math.round(255 - 170 * x), b = Math.round(255 - 60 * x);
  return `rgb(${r},${g},${b})`;
}

function drawHeatmap(texts, sim) {
  const table = $("heatmap");
  table.innerHTML = "";
  const head = document.createElement("tr");
  head.append(document.createElement("th"));
  texts.forEach((_, j) => { const th = document.createElement("th"); th.textContent = `#${j + 1}`; head.append(th); });
  table.append(head);
  sim.forEach((row, i) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = `#${i + 1} ${texts[i].length > 40 ? texts[i].slice(0, 40) + "…" : texts[i]}`;
    th.className = "label";
    tr.append(th);
    row.forEach((v) => {
      const td = document.createElement("td");
      td.textContent = v.toFixed(2);
      td.style.background = heatColor(v);
      td.style.color = v > 0.6 ? "#fff" : "#1d1f23";
      td.className = "cell";
      tr.append(td);
    });
    table.append(tr);
  });
  table.hidden = false;
}

export function setupModelDemo(ready, params) {
  const section = $("model");
  const button = $("model-run");
  const bar = $("model-progress");
  const stageLabel = $("model-stage");
  let loaded = false;

  async function run() {
    button.disabled = true;
    section.dataset.state = "loading";
    const gp = await ready;
    const texts = $("model-texts").value.split("\n").map((s) => s.trim()).filter(Boolean);
    try {
      if (!loaded) {
        await gp.runPython(START(new URL("models/minilm-l6-v2/", gp.base).href));
        const stageMs = {};
        let seen = 0, last = null, firstT = null;
        for (;;) {
          const r = await gp.runPython(POLL(seen));
          for (const e of r.events) {
            seen += 1;
            if (firstT === null) firstT = e.t_ms;
            if (!stageMs[e.stage]) stageMs[e.stage] = { first: e.t_ms, last: e.t_ms };
            stageMs[e.stage].last = e.t_ms;
            last = e;
          }
          if (last) {
            if (last.percent !== null && last.percent !== undefined) bar.value = last.percent;
            const where = last.tensor ? ` · ${last.tensor}` : last.layer ? ` · layer ${last.layer}` : "";
            const mb = last.bytes_total ? ` · ${(last.bytes_done / 1048576).toFixed(1)} / ${(last.bytes_total / 1048576).toFixed(1)} MiB` : "";
            stageLabel.textContent = `${last.stage}${mb}${where}${last.note ? " · " + last.note : ""}`;
          }
          if (r.error) throw Object.assign(new Error(r.error), { name: "LoadError" });
          if (r.done) break;
          await new Promise((res) => setTimeout(res, 120));
        }
        const rows = Object.entries(stageMs).map(([k, v]) => `<tr><td>${k}</td><td class="num">${v.first.toFixed(0)}</td>` +
          `<td class="num">${v.last.toFixed(0)}</td><td class="num">${(v.last - v.first).toFixed(0)}</td></tr>`);
        $("model-stages").querySelector("tbody").innerHTML = rows.join("");
        $("model-stages").hidden = false;
        loaded = true;
      }
      stageLabel.textContent = `embedding ${texts.length} sentences…`;
      const out = await gp.runPython(EMBED(texts));
      drawHeatmap(texts, out.sim);
      const s = out.stats;
      $("model-summary").textContent = `tier ${out.tier} (${out.backend}) · embed ${out.embed_ms.toFixed(0)} ms for ` +
        `${texts.length} sentences · load ${s.elapsed_ms} ms: ${s.fetched_chunks} chunks downloaded, ` +
        `${s.cached_chunks} from the cache${s.memory_only ? " (memory only: " + s.memory_reason + ")" : ""}`;
      stageLabel.textContent = "ready";
      section.dataset.state = "done";
    } catch (e) {
      stageLabel.textContent = `${e.name}: ${e.message}`;
      section.dataset.state = "error";
    } finally {
      button.disabled = false;
    }
  }
  button.addEventListener("click", run);
  ready.then(() => { button.disabled = false; });
  if (params.get("model") === "1") run();
}
