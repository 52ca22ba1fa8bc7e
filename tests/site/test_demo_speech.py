"""gpuport.site.demo_speech natively on the cpu backend: the demo page's microphone box transcribes what it is fed,
half a second at a time as the page sends it, says how much it heard and how loud it was (a microphone that
delivers silence shows a peak of 0), and ends on stop. Audio that arrives while a window is being transcribed is
taken together: a slow machine gives fewer updates, never a text that falls further behind."""

from __future__ import annotations

import asyncio

import gpuport as gp
import numpy as np
import speech_clips as speech
from gpuport.models import audio
from gpuport.site.demo_speech import SpeechDemo


def test_the_microphone_box_transcribes_what_it_is_fed_and_says_how_loud_it_was():
    clip, rate = audio.mono(*audio.read_wav(speech.clip_path(speech.CLIPS["fox"]).read_bytes()))

    async def run():
        rt = await gp.open(backend="cpu")
        try:
            demo = SpeechDemo(rt)
            demo.listen(rate)
            for i in range(0, len(clip), rate // 2):   # as the page sends it: half a second at a time
                demo.feed(clip[i:i + rate // 2])
                await asyncio.sleep(0)
            demo.stop()
            heard = await demo.wait()
            demo.listen(rate)   # all of it arrives before the box gets a turn, as behind a long transcription
            for i in range(0, len(clip), rate // 2):
                demo.feed(clip[i:i + rate // 2])
            demo.stop()
            behind = await demo.wait()
            demo.listen(rate)
            demo.feed(np.zeros(rate, np.float32))
            demo.stop()
            return heard, behind, await demo.wait()
        finally:
            rt.close()

    heard, behind, silent = asyncio.run(run())
    assert heard["state"] == "done" and heard["error"] is None, heard
    words = {w.strip(".,").lower() for w in speech.reference_text("fox").split() if len(w) > 3}
    assert len([w for w in words if w in heard["text"].lower()]) >= 4, (words, heard["text"])
    f = heard["figures"]
    assert abs(f["heard_s"] - len(clip) / rate) < 1e-6 and f["updates"] >= 2 and f["load_s"] >= 0, f
    assert abs(f["peak"] - float(np.abs(clip).max())) < 1e-7 and f["peak"] > 0.05, f
    # one partial update and the final one, where one update per second heard would have made seven
    assert behind["figures"]["updates"] == 2 and behind["text"] == heard["text"], (behind, heard["text"])
    assert silent["state"] == "done" and silent["figures"]["peak"] == 0.0 and silent["figures"]["heard_s"] == 1.0
