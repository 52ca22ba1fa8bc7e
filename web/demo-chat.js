// The chat half of the demo page: SmolLM2-135M-Instruct (4-bit GGUF) streaming tokens as they are generated.
// The logic is Python (gpuport.site.demo_chat.ChatDemo, in the page's Pyodide); this file sends, polls and draws:
// the load's progress, the reply as its tokens arrive, time to first token, tokens/s, backend and tier, cancel.

const $ = (id) => document.getElementById(id);

const SETUP = (source) => `
from gpuport.site.demo_chat import ChatDemo, DEMO_PROMPT
_chat = ChatDemo(rt, source=${JSON.stringify(source)})
DEMO_PROMPT
`;
const SEND = (text, maxNew) => `_chat.send(${JSON.stringify(text)}, max_new_tokens=${Number(maxNew)})`;
const NEXT = (events, tokens) => `await _chat.next(${events}, ${tokens})`;   // returns once something is new

function figuresText(r) {
  const f = r.figures;
  const parts = [];
  if (f.time_to_first_token_s !== undefined) parts.push(`first token ${(f.time_to_first_token_s * 1000).toFixed(0)} ms`);
  if (f.prefill_tokens_per_s !== undefined) parts.push(`prefill ${f.prefill_tokens_per_s.toFixed(1)} tokens/s`);
  const decode = f.decode_tokens_per_s !== undefined ? f.decode_tokens_per_s : f.tokens_per_s;
  if (decode !== undefined) parts.push(`${decode.toFixed(2)} tokens/s`);
  if (f.generated_tokens !== undefined) parts.push(`${f.generated_tokens} tokens`);
  parts.push(`backend ${r.backend}${f.placement ? " (forward on the " + f.placement + ")" : ""}`, `tier ${r.tier}`);
  if (f.load_s !== undefined) parts.push(`model loaded in ${f.load_s.toFixed(1)} s`);
  return parts.join(" · ");
}

export function setupChatDemo(ready, params) {
  const section = $("chat");
  const input = $("chat-input");
  const send = $("chat-send");
  const cancel = $("chat-cancel");
  const log = $("chat-log");
  const bar = $("chat-progress");
  const stage = $("chat-stage");
  let setup = null;

  function bubble(role, text) {
    const p = document.createElement("p");
    p.className = `msg ${role}`;
    p.textContent = text;
    log.append(p);
    return p;
  }

  async function turn(text) {
    const gp = await ready;
    if (setup === null) {   // the model's files sit beside gpuport's own (gp.base)
      setup = gp.runPython(SETUP(new URL("models/smollm2-135m-instruct/", gp.base).href));
    }
    await setup;
    send.disabled = true;
    cancel.disabled = false;
    section.dataset.state = "running";
    bubble("user", text);
    const reply = bubble("assistant", "");
    reply.dataset.updates = "0";
    let events = 0, tokens = 0;
    try {
      await gp.runPython(SEND(text, $("chat-max").value));
      for (;;) {
        const r = await gp.runPython(NEXT(events, tokens));
        events += r.events.length;
        const last = r.events[r.events.length - 1];
        if (last) {
          if (last.percent !== null && last.percent !== undefined) bar.value = last.percent;
          stage.textContent = `loading the model: ${last.stage}${last.tensor ? " · " + last.tensor : ""}` +
            `${last.note ? " · " + last.note : ""}`;
        }
        if (r.tokens.length) {   // each poll's new text, drawn as it comes
          tokens += r.tokens.length;
          reply.textContent += r.tokens.join("");
          reply.dataset.updates = String(Number(reply.dataset.updates) + 1);
          reply.dataset.tokens = String(tokens);
        }
        if (r.state === "generating" || r.state === "done" || r.state === "cancelled") {
          bar.value = 100;
          stage.textContent = r.state === "generating" ? "generating…" : r.state;
        }
        $("chat-figures").textContent = figuresText(r);
        if (r.state === "error") throw Object.assign(new Error(r.error), { name: "Error" });
        if (r.state === "done" || r.state === "cancelled") {
          section.dataset.state = r.state;
          break;
        }
      }
    } catch (e) {
      stage.textContent = `${e.name}: ${e.message}`;
      section.dataset.state = "error";
    } finally {
      send.disabled = false;
      cancel.disabled = true;
    }
  }

  send.addEventListener("click", () => {
    const text = input.value.trim();
    if (text) { input.value = ""; turn(text); }
  });
  input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send.click(); } });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    await (await ready).runPython("_chat.cancel()");
  });
  ready.then(() => { send.disabled = false; });
  if (params.get("chat_max")) $("chat-max").value = params.get("chat_max");
  if (params.get("chat") === "1") {
    ready.then(async (gp) => {
      setup = gp.runPython(SETUP(new URL("models/smollm2-135m-instruct/", gp.base).href));
      turn(await setup);
    });
  }
}
