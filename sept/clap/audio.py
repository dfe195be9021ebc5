"""CLAP's audio input: decode, mix to mono, resample to 48 kHz, log-mel.

Every clip reaches laion-clap as a mono 48 kHz waveform quantized to 16 bits, as laion-clap's
own file path (`librosa.load(path, sr=48000)` + int16 round trip) produces it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 48000           # CLAP's audio front end
CLIP_SAMPLES = 480000         # one 10 s window at 48 kHz
CROP_MODES = ("deterministic", "random")

def to_mono(wave: np.ndarray, origin: str) -> np.ndarray:
    """[T] or [T, C] / [C, T] (channels = the shorter axis) -> [T] float32, channel mean."""
    wave = np.asarray(wave)
    if np.issubdtype(wave.dtype, np.integer):
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        wave = wave.mean(axis=0 if wave.shape[0] < wave.shape[1] else 1)
    elif wave.ndim != 1:
        raise ValueError(f"{origin}: expected a waveform of shape [T], [T, C] or [C, T], got {tuple(wave.shape)}")
    if wave.size == 0:
        raise ValueError(f"{origin}: empty waveform")
    if not np.isfinite(wave).all():
        raise ValueError(f"{origin}: waveform holds NaN or infinite values")
    return wave


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 waveform [T] and its sample rate; soundfile first, librosa for other formats."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)   # [T, C]
        wave = wave.T
    except soundfile.LibsndfileError:
        import librosa

        wave, rate = librosa.load(str(path), sr=None, mono=False)
    return to_mono(wave, str(path)), int(rate)


def to_clap_rate(wave: np.ndarray, rate: int) -> np.ndarray:
    """[T] at `rate` -> [T'] at 48 kHz, quantized to 16 bits as laion-clap does before encoding."""
    if rate != SAMPLE_RATE:
        import librosa

        # soxr_hq: what librosa.load(path, sr=48000) uses in laion-clap's file path.
        wave = librosa.resample(wave, orig_sr=rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    wave = np.clip(wave, -1.0, 1.0)
    return ((wave * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def mel_spectrogram(wave: torch.Tensor, audio_cfg: dict) -> torch.Tensor:
    """[T] -> log-mel [frames, mel_bins]: laion-clap's `get_mel` (fusion input).

    Same computation as torchaudio's MelSpectrogram(power 2, htk scale, no norm, centered reflect
    padding) + AmplitudeToDB(top_db=None), written with torch.stft so torchaudio is not required.
    """
    n_fft, hop = audio_cfg["window_size"], audio_cfg["hop_size"]
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs().pow(2)
    n_freqs, n_mels = n_fft // 2 + 1, audio_cfg["mel_bins"]
    all_freqs = torch.linspace(0, audio_cfg["sample_rate"] // 2, n_freqs)
    m_min, m_max = (2595.0 * np.log10(1.0 + f / 700.0) for f in (audio_cfg["fmin"], audio_cfg["fmax"]))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)                            # htk mel scale
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    banks = torch.max(torch.zeros(1), torch.min(down, up)).to(wave.device)     # [n_freqs, n_mels]
    mel = torch.matmul(spec.transpose(-1, -2), banks)                           # [frames, n_mels]
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


# --------------------------------------------------------------------------- the backbone
