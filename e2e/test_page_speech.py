"""Whisper tiny.en in the page: the model.bin through the progressive loader (encoder and decoder chunks in turns),
the audio front end and the model on gpuport ops, and the token ids equal to faster-whisper's natively computed ones
(tests/speech_clips.py), in Chromium and Firefox under auto and with the whole model pinned to the page's GPU (which must
then answer every op); a clip's WAV bytes go in as the user's file would."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import speech_clips as speech  # noqa: E402

TRANSCRIBE = """
import base64, time
from gpuport import models
_events = []
if "asr" not in globals():
    asr = await models.load("whisper-tiny.en", rt, on_progress=_events.append)
_out = {{}}
for _name, _b64 in {clips!r}.items():
    _t0 = time.perf_counter()
    _r = await asr.transcribe(base64.b64decode(_b64))
    _out[_name] = {{"segments": [s.tokens for s in _r.segments], "text": _r.text,
                    "seconds": time.perf_counter() - _t0}}
{{"clips": _out, "components": [e.get("component") for e in _events if e["stage"] in ("download", "upload")],
  "ran": sorted(rt.info()["ran"])}}
"""

PINNED = """
import base64, time
_before = rt.info()["ran"]
with rt.pinned("webgpu"):                     # the whole model on the page's GPU
    _t0 = time.perf_counter()
    _pinned = await asr.transcribe(base64.b64decode({clip!r}))
_ran = {{op: {{k: n - _before.get(op, {{}}).get(k, 0) for k, n in per.items()}} for op, per in rt.info()["ran"].items()}}
{{"tokens": _pinned.tokens, "seconds": time.perf_counter() - _t0, "ran": {{op: d for op, d in _ran.items() if any(d.values())}}}}
"""


def _b64(name: str) -> str:
    return base64.b64encode(speech.clip_path(speech.LONG if name == "long" else speech.CLIPS[name]).read_bytes()).decode()


# The whole model once per browser engine under auto (the host, on these software adapters), and once pinned to a
# page's GPU (Firefox's wgpu: lavapipe is the faster software adapter; every Whisper kernel is proven on Dawn by the
# parity lanes). The 30 s windowing of a long clip is backend-independent and tested natively (tests/models).
@pytest.mark.parametrize("lane,clip,pinned", [("chromium-auto", "fox", False), ("firefox-auto", "weather", True)])
def test_whisper_tokens_equal_faster_whisper_in_the_page(lane_factory, lane, clip, pinned):
    page = lane_factory(lane)
    got = page.run(TRANSCRIBE.format(clips={clip: _b64(clip)}))
    assert got["clips"][clip]["segments"] == [list(s) for s in speech.reference(clip)], got["clips"][clip]["text"]
    seq = [c for c in got["components"] if c]   # the two components' bytes arrive interleaved
    assert seq.index("decoder") < len(seq) - 1 - seq[::-1].index("encoder"), seq
    assert seq.index("encoder") < len(seq) - 1 - seq[::-1].index("decoder"), seq
    assert "stft_power" in got["ran"], got["ran"]   # the features
    # the encoder on the device op by op, or on the host a layer per kernel call (models/whisper.encode_host)
    assert {"log_mel", "conv1d"} <= set(got["ran"]) or "whisper.encode" in got["ran"], got["ran"]
    # the decoder on the device op by op, or on the host a whole step per kernel call (models/whisper.step_host)
    assert "kv_attention" in got["ran"] or "whisper.decode" in got["ran"], got["ran"]
    summary = f"\n{lane}: {clip} {got['clips'][clip]['seconds']:.2f} s"
    if pinned:
        gpu = page.run(PINNED.format(clip=_b64("short")))
        assert gpu["tokens"] == [t for s in speech.reference("short") for t in s], gpu
        on_host = {op: d for op, d in gpu["ran"].items() if d.get("cpu")}
        assert not on_host, on_host                   # pinned: nothing answered on the host
        for op in ("stft_power", "log_mel", "conv1d", "attention", "kv_attention", "matmul"):
            assert gpu["ran"].get(op, {}).get("webgpu"), (op, gpu["ran"])
        summary += f"; pinned to the GPU: short {gpu['seconds']:.1f} s"
    print(summary)


# The page's microphone, played from a clip: getUserMedia answers with a stream an AudioContext plays the clip into
# (looped, as Chromium's file-backed fake device does), so the session's own Chromium serves; no second browser.
FAKE_MICROPHONE = """(() => {
  navigator.mediaDevices.getUserMedia = async () => {
    const context = new AudioContext();
    const clip = await context.decodeAudioData(await (await fetch("/__microphone.wav")).arrayBuffer());
    const source = context.createBufferSource();
    source.buffer = clip;
    const out = context.createMediaStreamDestination();
    source.connect(out);
    // once, after 1.5 s of silence (the page connects its capture in that time) and followed by silence: a looped
    // clip cut its sentence at the loop's seam wherever a loaded machine stopped late, and one such capture of
    // 15.1 s (two seams) was transcribed "the"
    source.start(context.currentTime + 1.5);
    return out.stream;
  };
})()"""


def test_microphone_demo_transcribes_what_it_hears(browsers, server_url):
    """The demo page's microphone box in Chromium, its microphone fed a clip: it loads the model (progress naming
    both components), transcribes as it listens, and finishes on Stop."""
    from playwright.sync_api import expect

    wav = speech.clip_path(speech.CLIPS["short"]).read_bytes()
    context = browsers.get("chromium-webgpu").new_context()
    try:
        context.route("**/__microphone.wav", lambda route: route.fulfill(status=200, body=wav,
                                                                          headers={"content-type": "audio/wav"}))
        context.add_init_script(FAKE_MICROPHONE)
        page = context.new_page()
        page.goto(server_url + "/?table=0&precompile=off&speech=1")
        section = page.locator("#speech")
        expect(section).to_have_attribute("data-state", "listening", timeout=180_000)
        # 1.5 s of silence, the 1.3 s clip, then silence: let it play through, with live updates on the way
        expect(page.locator("#speech-figures")).to_contain_text(re.compile(r"heard ([4-9]|\d\d)\."), timeout=60_000)
        page.click("#speech-stop")
        expect(section).to_have_attribute("data-state", "done", timeout=120_000)
        text = page.locator("#speech-text").inner_text().lower()
        figures = page.locator("#speech-figures").inner_text()
        components = section.get_attribute("data-components").split()
    finally:
        context.close()
    print(f"\nmicrophone: {text!r} ({figures})")
    peak = float(figures.split("peak ")[1].split()[0])
    assert peak > 0.05, f"the microphone delivered silence (its loudest sample {peak}): {figures}"
    # what was said: faster-whisper hears the file as "The world, Lord."; the live capture, resampled and followed by
    # as much silence as the machine's speed let in before Stop, is heard as "hello world." or "the lord world."
    assert "world" in text and ("hello" in text or "lord" in text), text
    assert {"encoder", "decoder"} <= set(components), components
    assert "updates" in figures, figures
