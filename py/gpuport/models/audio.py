"""Audio for speech models: PCM in (NumPy arrays, WAV bytes or files), checked, mixed down and resampled to the
model's rate; Whisper's mel filter bank and its log-mel spectrogram in NumPy (the reference the kernels answer to).

    pcm = audio.pcm(samples_or_wav, sample_rate=44100)   # float32 mono at 16 kHz, or a clear error
    feats = audio.log_mel_reference(pcm)                  # (80, frames): faster-whisper's features

Resampling is band-limited by the FFT (the spectrum cut or zero-padded to the new rate, as scipy.signal.resample
does): exact for every frequency below both Nyquist limits, with no aliasing; the clip is treated as periodic, so
its very first and last milliseconds may ring slightly. It is done once per clip, on the host.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from ..errors import AudioError
from ..host import references

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
CHUNK_SECONDS = 30
WINDOW_FRAMES = CHUNK_SECONDS * SAMPLE_RATE // HOP   # 3000 frames: one encoder window

_WAV_INT = {1: np.dtype("u1"), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


def read_wav(data: bytes | bytearray | memoryview, where: str = "WAV") -> tuple[np.ndarray, int]:
    """(samples (n, channels) float32 in [-1, 1], sample rate) of a RIFF/WAVE file's bytes: PCM 8/16/24/32-bit or
    IEEE float 32/64 (WAVE_FORMAT_EXTENSIBLE included)."""
    data = bytes(data)
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{where}: not a RIFF/WAVE file (starts with {data[:12]!r})")
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            if len(chunk) < 16:
                raise AudioError(f"{where}: the fmt chunk has {len(chunk)} bytes, expected at least 16")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", chunk)
            if tag == 0xFFFE and len(chunk) >= 26:   # WAVE_FORMAT_EXTENSIBLE: the real tag leads the subformat GUID
                tag = struct.unpack_from("<H", chunk, 24)[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            body = chunk
        pos += 8 + size + (size & 1)
    if fmt is None or body is None:
        raise AudioError(f"{where}: no {'fmt' if fmt is None else 'data'} chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise AudioError(f"{where}: {channels} channels at {rate} Hz")
    width = bits // 8
    body = body[:len(body) - len(body) % (width * channels)]
    if tag == 3 and bits in (32, 64):
        x = np.frombuffer(body, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif tag == 1 and bits == 24:
        b = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 8388608.0
    elif tag == 1 and width in _WAV_INT:
        raw = np.frombuffer(body, dtype=_WAV_INT[width]).astype(np.float32)
        x = (raw - 128.0) / 128.0 if width == 1 else raw / float(2 ** (bits - 1))
    else:
        raise AudioError(f"{where}: WAV format tag {tag} with {bits}-bit samples is not supported (PCM 8/16/24/32 "
                         "or float 32/64)")
    return x.reshape(-1, channels), int(rate)


def resample(x: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
    """Mono `x` from `rate` to `to` Hz, band-limited (see the module doc)."""
    if rate == to or x.size == 0:
        return x.astype(np.float32, copy=False)
    n = max(1, int(round(x.size * to / rate)))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = min(spec.size, n // 2 + 1)
    out = np.zeros(n // 2 + 1, dtype=np.complex128)
    out[:keep] = spec[:keep]
    if n % 2 == 0 and keep == n // 2 + 1 and n < x.size:
        out[-1] = out[-1].real   # the new Nyquist bin of a real signal
    return (np.fft.irfft(out, n) * (n / x.size)).astype(np.float32)


def pcm(audio: Any, sample_rate: int | None = SAMPLE_RATE) -> np.ndarray:
    """Float32 mono PCM at 16 kHz from `audio` (see `mono`), resampled from its rate where that differs."""
    return resample(*mono(audio, sample_rate))


def mono(audio: Any, sample_rate: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """(float32 mono samples, their rate) from `audio`: a NumPy float array (samples,) or (samples, channels) at
    `sample_rate`, a WAV file's bytes, or (natively) a WAV file's path (their own rate wins). Stereo is averaged to
    mono. AudioError names what is wrong: integer samples, NaN or Inf, a non-WAV file, a rate that is not one."""
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        try:
            with open(path, "rb") as f:
                audio = f.read()
        except OSError as exc:
            raise AudioError(f"{path}: {exc.strerror or exc}") from None
        x, sample_rate = read_wav(audio, path)
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        x, sample_rate = read_wav(audio)
    else:
        x = np.asarray(audio)
        if x.dtype.kind != "f":
            raise AudioError(f"audio must be float PCM in [-1, 1] (float32), got dtype {x.dtype}"
                             + (": divide int16 samples by 32768" if x.dtype.kind in "iu" else ""))
        if x.ndim == 2 and x.shape[0] <= 8 < x.shape[1]:
            x = x.T   # (channels, samples), as some libraries give it
        if x.ndim not in (1, 2):
            raise AudioError(f"audio must be (samples,) or (samples, channels), got shape {x.shape}")
    if sample_rate is None or int(sample_rate) < 1:
        raise AudioError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    x = x.reshape(x.shape[0], -1).mean(axis=1) if x.ndim == 2 else x
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argmax(bad))
        raise AudioError(f"audio has {int(bad.sum())} non-finite samples (first: {x[i]} at sample {i})")
    return x.astype(np.float32), int(sample_rate)


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) Slaney-scale triangular filters with Slaney area normalisation (librosa's
    `mel(htk=False, norm="slaney")`, as Whisper's checkpoints were trained with)."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mels = np.linspace(0.0, 45.245640471924965, n_mels + 2)   # hz_to_mel(8000) on the Slaney scale
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    freqs = f_sp * mels
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    fdiff = np.diff(freqs)
    ramps = freqs[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2:n_mels + 2] - freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)


def padded_for_stft(x: np.ndarray) -> np.ndarray:
    """The signal the STFT frames: 160 zeros appended (faster-whisper's `padding`), then n_fft/2 reflected
    samples on each side (the centred STFT)."""
    x = np.pad(np.asarray(x, dtype=np.float32), (0, HOP))
    return np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")


def feature_frames(n_samples: int) -> int:
    """Frames of features for `n_samples` samples: the STFT's frames less its last one (as faster-whisper)."""
    return (n_samples + HOP) // HOP


def log_mel_reference(x: np.ndarray) -> np.ndarray:
    """(80, frames) float32: faster-whisper's FeatureExtractor on 16 kHz mono `x`, from the ops' float64 references
    (references.stft_power_ref, log_mel_ref): |STFT|^2 of the periodic Hann window, the mel bank, log10 clamped at
    1e-10, floored at max - 8, then (v + 4) / 4."""
    power = references.stft_power_ref(padded_for_stft(x), n_fft=N_FFT, hop=HOP, frames=feature_frames(len(x)))
    return references.log_mel_ref(power.astype(np.float64) @ mel_filters().astype(np.float64).T).T


__all__ = ["CHUNK_SECONDS", "HOP", "N_FFT", "N_MELS", "SAMPLE_RATE", "WINDOW_FRAMES",
           "feature_frames", "log_mel_reference", "mel_filters", "mono", "padded_for_stft", "pcm", "read_wav", "resample"]
