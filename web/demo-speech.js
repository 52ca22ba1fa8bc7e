// The microphone half of the demo page: Whisper tiny.en transcribing what it hears, live.
// The logic is Python (gpuport.site.demo_speech.SpeechDemo, in the page's Pyodide); this file captures audio and draws:
// it sends the microphone's samples at least half a second at a time, one send in flight (two bridge crossings:
// setArray, then feed), and polls for the load's progress (per component: encoder, decoder) and the text.

const $ = (id) => document.getElementById(id);

const SETUP = (source) => `
from gpuport.site.demo_speech import SpeechDemo
_speech = SpeechDemo(rt, source=${JSON.stringify(source)})
`;
const SEND_EVERY_S = 0.5;

// An AudioWorklet that hands its input's first channel to the page in blocks of 128 frames.
const CAPTURE = `registerProcessor("gpuport-capture", class extends AudioWorkletProcessor {
  process(inputs) { if (inputs[0][0]) this.port.postMessage(inputs[0][0].slice()); return true; }
});`;

function figuresText(r) {
  const f = r.figures;
  const parts = [];
  if (f.heard_s !== undefined) parts.push(`heard ${f.heard_s.toFixed(1)} s`);
  if (f.peak !== undefined) parts.push(`peak ${f.peak.toFixed(2)}`);
  if (f.updates !== undefined) parts.push(`${f.updates} updates`);
  if (f.load_s !== undefined) parts.push(`model loaded in ${f.load_s.toFixed(1)} s`);
  parts.push(`backend ${r.backend}`, `tier ${r.tier}`);
  return parts.join(" · ");
}

export function setupSpeechDemo(ready, params) {
  const section = $("speech");
  const listen = $("speech-listen");
  const stopButton = $("speech-stop");
  const bar = $("speech-progress");
  const stage = $("speech-stage");
  let setup = null, capture = null;

  async function start() {
    const gp = await ready;
    if (setup === null) setup = gp.runPython(SETUP(new URL("models/whisper-tiny.en/", gp.base).href));
    await setup;
    listen.disabled = true;
    stage.textContent = "asking for the microphone…";
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const context = new AudioContext();
    const url = URL.createObjectURL(new Blob([CAPTURE], { type: "text/javascript" }));
    await context.audioWorklet.addModule(url);
    const node = new AudioWorkletNode(context, "gpuport-capture");
    context.createMediaStreamSource(stream).connect(node);
    await gp.runPython(`_speech.listen(${context.sampleRate})`);
    section.dataset.state = "listening";
    stopButton.disabled = false;
    // One send at a time, and what was captured meanwhile goes in the next one: Python transcribes once per send
    // that completes a second of audio, so while a transcription holds the worker the audio waits here as one block.
    // Sends chained half a second each made every second heard cost a transcription of its own (a loaded machine
    // fell further behind with each one, and Stop waited for all of them).
    let pending = [], frames = 0, sending = null;
    const send = () => {
      const block = new Float32Array(frames);
      let at = 0;
      for (const p of pending) { block.set(p, at); at += p.length; }
      pending = []; frames = 0;
      sending = gp.setArray("_mic", block).then(() => gp.runPython("_speech.feed(_mic)")).then(() => {
        sending = null;
        if (frames >= SEND_EVERY_S * context.sampleRate) send();
      });
    };
    node.port.onmessage = ({ data }) => {
      pending.push(data);
      frames += data.length;
      if (sending === null && frames >= SEND_EVERY_S * context.sampleRate) send();
    };
    const drained = async () => {   // what is in flight, then the rest of the capture
      while (sending !== null) await sending;
      if (frames > 0) { send(); await sending; }
    };
    capture = { stream, context, drained };
    poll(gp);
  }

  async function stop() {
    stopButton.disabled = true;
    if (capture === null) return;
    capture.stream.getTracks().forEach((t) => t.stop());
    await capture.context.close();
    await capture.drained();
    capture = null;
    await (await ready).runPython("_speech.stop()");
  }

  async function poll(gp) {
    let events = 0;
    for (;;) {
      const r = await gp.runPython(`_speech.poll(${events})`);
      events += r.events.length;
      const last = r.events[r.events.length - 1];
      if (last) {
        if (last.percent !== null && last.percent !== undefined) bar.value = last.percent;
        stage.textContent = `loading the model: ${last.stage}${last.component ? " · " + last.component : ""}` +
          `${last.tensor ? " · " + last.tensor : ""}`;
        section.dataset.components = [...new Set([...(section.dataset.components || "").split(" ").filter(Boolean),
          ...r.events.map((e) => e.component).filter(Boolean)])].join(" ");
      }
      if (r.state !== "loading") { bar.value = 100; stage.textContent = r.state === "listening" ? "listening…" : r.state; }
      $("speech-text").textContent = r.text;
      $("speech-partial").textContent = r.partial;
      $("speech-figures").textContent = figuresText(r);
      if (r.state === "error") {
        stage.textContent = r.error;
        section.dataset.state = "error";
        break;
      }
      if (r.state === "done") { section.dataset.state = "done"; break; }
      await new Promise((res) => setTimeout(res, 200));
    }
    listen.disabled = false;
  }

  listen.addEventListener("click", () => start().catch((e) => {
    stage.textContent = `${e.name}: ${e.message}`;
    section.dataset.state = "error";
    listen.disabled = false;
  }));
  stopButton.addEventListener("click", () => stop());
  ready.then(() => { listen.disabled = false; });
  if (params.get("speech") === "1") ready.then(() => listen.click());
}
