"""Whisper tiny.en (gpuport.models.whisper) against faster-whisper on espeak-ng clips (tests/speech_clips.py), natively;
its model.bin reader, audio input, features, streaming and loading.

Transcripts: the token ids must equal faster-whisper's greedy float32 output exactly, segment by segment (the long
clip has two 30 s windows). Both sides compute in float32 from the same float16 weights; only summation order
differs, and every step of these clips has a top-2 logit margin far above that noise.
Features: gpuport's NumPy reference (float64 inside) and faster-whisper's (float32 with a complex64 FFT) agree within
FEATURE_TOL = 1e-4 in Whisper's (log10 + 4) / 4 units, i.e. 0.09% in power: faster-whisper's own float32 rounding
(measured: 1.0e-5). The runtime's features (stft_power's DFT in float32 over 400 terms, the mel matmul over 201,
log_mel) are held to the same tolerance against the reference.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import wave

import gpuport as gp
import numpy as np
import pytest
import speech_clips as speech
from gpuport import models
from gpuport.formats import ctranslate2
from gpuport.formats.chunk_manifest import sha256
from gpuport.host import hostops
from gpuport.loading import chunk_cache
from gpuport.models import audio
from gpuport.models.whisper import Whisper
from model_server import Server

FEATURE_TOL = 1e-4
ENCODER_TOL = 5e-5


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module", params=["cpu", "auto"])
def asr(request) -> Whisper:
    speech.model_dir()
    rt = gp.open_sync(backend=request.param)
    model = run(models.load("whisper-tiny.en", rt))
    yield model
    rt.close()


# -- transcripts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("asr", ["cpu"], indirect=True)
def test_the_fused_host_encoder_equals_the_op_by_op_one(asr):
    """encode_host (a layer per kernel call, products on the kernels' threads) against cross_kv(encode()) op by op on
    the same host kernels: float32 both, only the order of summation differs; ENCODER_TOL relative to the largest
    value: four layers of 1500-term float32 sums (measured 1.0e-5)."""
    feats, frames = asr.features(speech.pcm("fox"))
    fused = asr.encode_host(feats.known_values(), 0, frames)
    op_by_op = asr.cross_kv(asr.encode(feats, 0, frames))
    assert len(fused) == len(op_by_op) == asr.config.decoder_layers
    for (k, v), (k_ref, v_ref) in zip(fused, op_by_op):
        for got, want in ((k, k_ref), (v, v_ref)):
            want = want.known_values().reshape(got.shape)
            assert got.flags.c_contiguous and got.dtype == np.float32
            assert np.abs(got - want).max() <= ENCODER_TOL * np.abs(want).max()


@pytest.mark.parametrize("clip", [*speech.CLIPS, "long"])
def test_tokens_equal_faster_whisper(asr, clip):
    got = run(asr.transcribe(speech.pcm(clip)))
    want = speech.reference(clip)
    assert [tuple(s.tokens) for s in got.segments] == list(want), (clip, got.text)
    assert got.tokens == [t for s in want for t in s]
    assert got.text == asr.vocab.decode(got.tokens).strip() and got.text
    if clip == "long":
        assert len(got.segments) == 2 and got.segments[0].end == pytest.approx(30.0)


@pytest.mark.parametrize("asr", ["cpu"], indirect=True)
def test_steps_choose_from_the_int8_vocabulary_and_keep_float32_results(asr):
    """Where kernels run the steps, each step's token comes from the vocabulary's int8 copy (host/vocab.py) and
    the log-probabilities from one float32 product at the window's end: tokens and avg_logprob equal the float32
    path's (summed in another order: 1e-6)."""
    host = asr._host_decoder()
    assert (host["vocab"] is not None) == (hostops.layers() is not None)
    if host["vocab"] is None:
        pytest.fail(f"no host kernels linked here ({hostops.reason()}): the int8 path cannot be checked")
    before = {op: sum(hostops.calls().get(op, {}).values()) for op in ("project_q8", "project")}
    fast = run(asr.transcribe(speech.pcm("fox")))
    after = {op: sum(hostops.calls().get(op, {}).values()) for op in ("project_q8", "project")}
    assert after["project_q8"] - before["project_q8"] == len(fast.tokens)   # every step after the prompt's
    assert after["project"] - before["project"] == 2   # float32 logits: the prompt's, the window's log-probabilities
    vocab, host["vocab"] = host["vocab"], None
    try:
        exact = run(asr.transcribe(speech.pcm("fox")))
    finally:
        host["vocab"] = vocab
    assert fast.tokens == exact.tokens == [t for s in speech.reference("fox") for t in s]
    assert [s.avg_logprob for s in fast.segments] == pytest.approx([s.avg_logprob for s in exact.segments], abs=1e-6)


def test_tokens_equal_faster_whisper_on_the_gpu():
    # the whole model on wgpu's adapter (lavapipe here: ~40 s for this clip); nothing may answer on the host
    speech.model_dir()
    with gp.open_sync(backend="webgpu") as rt:
        asr = run(models.load("whisper-tiny.en", rt))
        assert run(asr.transcribe(speech.pcm("short"))).tokens == [t for s in speech.reference("short") for t in s]
        ran = rt.info()["ran"]
        assert all(set(d) == {"webgpu"} for d in ran.values()), ran
        assert {"stft_power", "log_mel", "conv1d", "attention", "kv_attention", "matmul"} <= set(ran), ran


def test_auto_reports_where_the_work_ran(asr):
    run(asr.transcribe(speech.pcm("short")))
    ran = asr.rt.info()["ran"]
    for op in ("stft_power", "matmul"):   # the features
        assert any(op in key for key in ran), (op, ran)
    # the encoder on the device op by op, or on the host a layer per kernel call (models/whisper.encode_host)
    assert {"log_mel", "conv1d", "attention"} <= set(ran) or "whisper.encode" in ran, ran
    if asr.rt.info()["backend"] == "cpu":
        assert set(ran["whisper.encode"]) == {"cpu"}, ran
    # the decoder on the device op by op, or on the host a whole step per kernel call (models/whisper.step_host)
    assert "kv_attention" in ran or "whisper.decode" in ran, ran
    if asr.rt.info()["backend"] == "cpu":
        assert set(ran["whisper.decode"]) == {"cpu"} and "kv_attention" not in ran, ran


@pytest.mark.parametrize("asr", ["cpu"], indirect=True)   # backend-independent: audio in, windows
def test_wav_bytes_path_stereo_and_other_rates_give_the_same_words(asr):
    path = speech.clip_path(speech.CLIPS["weather"])
    want = [t for s in speech.reference("weather") for t in s]
    assert run(asr.transcribe(str(path))).tokens == want
    assert run(asr.transcribe(path.read_bytes())).tokens == want
    x = speech.pcm("weather")
    assert run(asr.transcribe(np.stack([x, x], axis=1))).tokens == want
    up = audio.resample(x, 16000, 44100)   # band-limited both ways: the words survive
    assert run(asr.transcribe(up, sample_rate=44100)).text == run(asr.transcribe(x)).text


@pytest.mark.parametrize("asr", ["cpu"], indirect=True)   # backend-independent: audio in, windows
def test_silence_and_empty_audio_give_empty_text(asr):
    for x in (np.zeros(0, np.float32), np.zeros(16000 * 3, np.float32), np.zeros(10, np.float32)):
        r = run(asr.transcribe(x))
        assert r.text == "" and r.tokens == [] and r.segments == [], (len(x), r)


@pytest.mark.parametrize("asr", ["cpu"], indirect=True)
@pytest.mark.parametrize("bad,words", [
    (np.zeros(100, np.int16), "divide int16 samples by 32768"),
    (np.array([0.0, np.nan, 0.0], np.float32), "1 non-finite samples (first: nan at sample 1)"),
    (np.zeros((2, 3, 4), np.float32), "got shape (2, 3, 4)"),
    (b"not a wav file", "not a RIFF/WAVE file"),
])
def test_bad_audio_raises_audio_error_naming_it(asr, bad, words):
    with pytest.raises(gp.AudioError) as info:
        run(asr.transcribe(bad))
    assert words in str(info.value)


@pytest.mark.parametrize("asr", ["cpu"], indirect=True)   # backend-independent: audio in, windows
def test_stream_yields_partial_then_final_text(asr):
    x = speech.pcm("fox")
    chunks = [x[i:i + 8000] for i in range(0, len(x), 8000)]   # 0.5 s each

    async def collect():
        return [p async for p in asr.stream(chunks, every=2.0)]

    pieces = run(collect())
    assert [p.final for p in pieces] == [False] * (len(pieces) - 1) + [True] and len(pieces) >= 3, pieces
    assert pieces[-1].text == run(asr.transcribe(x)).text
    assert pieces[-1].end == pytest.approx(len(x) / 16000)


# -- features -----------------------------------------------------------------------------------------

def test_reference_features_equal_faster_whisper():
    for clip in ("fox", "long"):
        x = speech.pcm(clip)
        want = speech.reference_features(x)
        got = audio.log_mel_reference(x)
        assert got.shape == want.shape == (80, audio.feature_frames(len(x)))
        assert np.abs(got - want).max() <= FEATURE_TOL


@pytest.mark.parametrize("backend", ["webgpu", "cpu"])
def test_runtime_features_equal_the_reference(backend):
    speech.model_dir()
    x = speech.pcm("long")
    want = audio.log_mel_reference(x)
    with gp.open_sync(backend=backend) as rt:
        asr = run(models.load("whisper-tiny.en", rt))
        mel, frames = asr.features(x)
        for start, end in ((0, 3000), (3000, frames - 1)):
            got = run(rt.ops.log_mel(mel, start=start, rows=3000, end=end).read())
            assert np.abs(got[:end - start] - want[:, start:end].T).max() <= FEATURE_TOL
            assert not got[end - start:].any()   # the window's padding: zero rows, as faster-whisper pads
        if backend == "webgpu":
            assert {"stft_power", "log_mel"} <= {k.split(":")[-1] for k in rt.info()["ran"]}, rt.info()["ran"]


# -- model.bin ----------------------------------------------------------------------------------------

def test_model_bin_index():
    f = ctranslate2.ModelBinFile(speech.model_dir() / "model.bin")
    idx = f.index
    assert (idx.version, idx.spec, idx.revision, len(idx.variables)) == (6, "WhisperSpec", 3, 148)
    assert idx.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    conv = f.array("encoder/conv1/weight")
    assert conv.shape == (384, 80, 3) and conv.dtype == np.float16
    assert np.array_equal(f.array("decoder/projection/weight"), f.array("decoder/embeddings/weight"))
    assert int(f.array("encoder/num_heads")) == 6


def _broken(tmp_path, mutate) -> str:
    folder = tmp_path / "broken"
    shutil.copytree(speech.model_dir(), folder, ignore=shutil.ignore_patterns("model.bin"))
    data = bytearray((speech.model_dir() / "model.bin").read_bytes())
    (folder / "model.bin").write_bytes(mutate(data))
    return str(folder)


@pytest.mark.parametrize("mutate,words", [
    (lambda d: d[:5_000_000], "truncated: variable 'decoder/embeddings/weight' spans bytes"),
    (lambda d: b"\x07\x00\x00\x00" + d[4:], "CTranslate2 binary format version 7 is not supported"),
    (lambda d: b"", "truncated: the format version at byte 0 needs 4 bytes"),
])
def test_broken_model_bin_raises_load_error_naming_file_and_fault(tmp_path, mutate, words):
    folder = _broken(tmp_path, mutate)
    with gp.open_sync(backend="cpu") as rt, pytest.raises(gp.LoadError) as info:
        run(models.load("whisper-tiny.en", rt, source=folder))
    assert os.path.join(folder, "model.bin") in str(info.value) and words in str(info.value), str(info.value)


def _served(tmp_path) -> Server:
    folder = tmp_path / "tiny"
    folder.mkdir()
    for f in ("model.bin", "config.json", "vocabulary.txt"):
        os.symlink(speech.model_dir() / f, folder / f)
    packed = speech.ROOT / ".cache" / "models" / "whisper-tiny.en" / "manifest.json"
    if not packed.is_file():
        pytest.fail(f"{packed} is missing: run `make setup` (or gpuport pack-model --model whisper-tiny.en)")
    shutil.copy(packed, folder / "manifest.json")
    return Server(tmp_path)


def test_progressive_load_interleaves_encoder_and_decoder(tmp_path):
    srv = _served(tmp_path)
    events = []
    try:
        with gp.open_sync(backend="cpu") as rt:
            model = run(models.load("whisper-tiny.en", rt, source=srv.url, on_progress=events.append,
                                    loader_options={"cache": None}))
            assert run(model.transcribe(speech.pcm("short"))).tokens == [t for s in speech.reference("short") for t in s]
    finally:
        srv.close()
    seq = [e.get("component") for e in events if e["stage"] in ("download", "upload") and e.get("component")]
    assert {"encoder", "decoder"} <= set(seq), seq
    last = {c: len(seq) - 1 - seq[::-1].index(c) for c in ("encoder", "decoder")}
    assert seq.index("decoder") < last["encoder"] and seq.index("encoder") < last["decoder"], seq   # interleaved


def test_corrupt_model_bin_chunk_is_detected_and_never_cached(tmp_path):
    srv = _served(tmp_path)
    srv.faults.add("corrupt", path="model.bin")
    cache = chunk_cache.MemoryChunkCache()
    m = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    try:
        with gp.open_sync(backend="cpu") as rt, pytest.raises(gp.LoadError) as info:
            run(models.load("whisper-tiny.en", rt, source=srv.url,
                            loader_options={"cache": cache, "retries": 1, "backoff_s": 0.001}))
    finally:
        srv.close()
    assert srv.url + "model.bin" in str(info.value) and "sha256" in str(info.value), str(info.value)
    for key, blob in cache.chunks.items():   # only verified chunks of this file (and its verified small files)
        if key.startswith(m["sha256"] + ":"):
            assert sha256(blob) == m["chunks"][int(key.split(":")[1])]["sha256"]
        else:
            assert sha256(blob) in {f["sha256"] for f in m["files"].values()}, key


# -- audio input --------------------------------------------------------------------------------------

def _wav(samples: np.ndarray, rate: int, width: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(samples.shape[1] if samples.ndim == 2 else 1)
        w.setsampwidth(width)
        w.setframerate(rate)
        scale = {1: 127, 2: 32767, 4: 2**31 - 1}[width]
        ints = np.round(samples * scale).astype({1: np.int16, 2: "<i2", 4: "<i4"}[width])
        w.writeframes((ints + 128).astype(np.uint8).tobytes() if width == 1 else ints.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("width", [1, 2, 4])
def test_read_wav_pcm_widths_and_channels(width):
    t = np.linspace(0, 1, 800, endpoint=False)
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 5 * t), -0.25 * np.ones_like(t)], axis=1)
    x, rate = audio.read_wav(_wav(stereo, 8000, width))
    assert rate == 8000 and x.shape == (800, 2)
    assert np.abs(x - stereo).max() <= max(2.0 / {1: 127, 2: 32767, 4: 2**31 - 1}[width], 1e-7)   # float32 at 32 bits


def test_resample_is_band_limited():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)        # a whole number of cycles: periodic
    up = audio.resample(tone, 16000, 44100)
    assert len(up) == 44100
    assert np.abs(up - np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)).max() < 1e-4
    assert np.abs(audio.resample(up, 44100, 16000) - tone).max() < 1e-4
    high = np.sin(2 * np.pi * 9000 * np.arange(44100) / 44100).astype(np.float32)   # above 16 kHz's Nyquist
    assert np.abs(audio.resample(high, 44100, 16000)).max() < 1e-3                   # removed, not aliased
