"""Audio decoding/resampling with PyAV, the BEATs-compatible Kaldi fbank, and the pass-through mode."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import ASTFeatureExtractor, WhisperFeatureExtractor

from crema_processing import (
    CremaAudioFeatureExtractor,
    extract_audio_features,
    has_audio_stream,
    load_audio,
    resample_waveform,
    split_waveform,
)
from media_fixtures import media_dir, sine, video_no_audio, video_with_audio, write_wav  # noqa: F401


def kaldi_fbank_reference(wave: np.ndarray, sr: int = 16000, num_mel: int = 128) -> np.ndarray:
    """Straight transcription of `torchaudio.compliance.kaldi.fbank` with its defaults (25 ms / 10 ms, snip_edges,
    DC removal, pre-emphasis 0.97, povey window, 512-point FFT, power spectrum, Kaldi mel banks 20 Hz-Nyquist,
    log floored at float32 eps)."""
    length, shift, nfft = int(sr * 0.025), int(sr * 0.010), 512
    count = 1 + (len(wave) - length) // shift
    frames = np.stack([wave[i * shift : i * shift + length] for i in range(count)]).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    frames -= 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames *= np.power(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1)), 0.85)
    power = np.abs(np.fft.rfft(frames, n=nfft)) ** 2

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    low, high = mel(20.0), mel(sr / 2)
    delta = (high - low) / (num_mel + 1)
    b = np.arange(num_mel)[:, None]
    left, center, right = low + b * delta, low + (b + 1) * delta, low + (b + 2) * delta
    bins = mel(sr / nfft * np.arange(nfft // 2))[None]
    banks = np.maximum(0.0, np.minimum((bins - left) / (center - left), (right - bins) / (right - center)))
    banks = np.pad(banks, ((0, 0), (0, 1)))  # Kaldi gives the Nyquist bin no weight
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def noisy_tone(samples: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(samples)).astype(np.float32)


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


# ------------------------------------------------------------------------------------------------ fbank
def test_kaldi_fbank_matches_the_kaldi_definition():
    wave = noisy_tone(8000)
    ours = CremaAudioFeatureExtractor().kaldi_fbank(wave)
    reference = kaldi_fbank_reference(wave * 2**15)
    assert ours.shape == reference.shape == (48, 128) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_beats_normalisation_padding_and_segments():
    extractor = CremaAudioFeatureExtractor()
    wave = noisy_tone(16000)  # 1 s -> 98 fbank frames, padded to 2 x 512
    values = extractor(wave, sampling_rate=16000, return_tensors="np")["input_values"]
    assert values.shape == (1, 2, 512, 128) and values.dtype == np.float32
    expected = (kaldi_fbank_reference(wave * 2**15) - 15.41663) / (2 * 6.55582)
    np.testing.assert_allclose(values[0, 0, :98], expected, atol=1e-4)
    assert np.all(values[0, 0, 98:] == 0) and np.all(values[0, 1] == 0)


def test_long_audio_fills_consecutive_segments_or_spreads_uniformly():
    wave = noisy_tone(16000 * 3)  # 298 frames
    small = dict(num_segments=2, segment_length=100, feature_size=32)
    consecutive = CremaAudioFeatureExtractor(**small)(wave, sampling_rate=16000)["input_values"][0]
    full = (CremaAudioFeatureExtractor(**small).kaldi_fbank(wave) - 15.41663) / (2 * 6.55582)
    np.testing.assert_allclose(consecutive.reshape(200, 32), full[:200], atol=1e-5)
    uniform_extractor = CremaAudioFeatureExtractor(**small, segment_strategy="uniform")
    uniform = uniform_extractor(wave, sampling_rate=16000)["input_values"][0]
    np.testing.assert_allclose(uniform[0], full[:100], atol=1e-5)
    np.testing.assert_allclose(uniform[1], full[198:298], atol=1e-5)
    with pytest.raises(ValueError, match="segment_strategy"):
        CremaAudioFeatureExtractor(segment_strategy="random")


def test_bad_waveforms_are_refused():
    extractor = CremaAudioFeatureExtractor()
    with pytest.raises(ValueError, match="NaN"):
        extractor(np.full(16000, np.nan, np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="empty"):
        extractor(np.zeros(0, np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="shorter than one 25 ms"):
        extractor(np.zeros(100, np.float32), sampling_rate=16000)


def test_feature_extractor_save_and_load(tmp_path):
    extractor = CremaAudioFeatureExtractor(num_segments=3, segment_length=64, feature_size=32)
    extractor.kaldi_fbank(noisy_tone(800))  # fills the mel cache, which must not be saved
    extractor.save_pretrained(tmp_path)
    loaded = CremaAudioFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict()
    assert "_mel_filters" not in loaded.to_dict() and loaded.num_segments == 3
    wave = noisy_tone(4000)
    np.testing.assert_array_equal(
        loaded(wave, sampling_rate=16000)["input_values"], extractor(wave, sampling_rate=16000)["input_values"]
    )


# ------------------------------------------------------------------------------------- decoding / resampling
@pytest.mark.parametrize("rate, channels", [(44100, 2), (8000, 1), (48000, 6)])
def test_any_rate_and_channel_count_becomes_16k_mono(tmp_path, rate, channels):
    path = write_wav(tmp_path / f"tone_{rate}_{channels}.wav", sine(1.0, rate, channels=channels), rate)
    wave = load_audio(path)
    assert wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) - 16000) <= 64
    assert dominant_frequency(wave, 16000) == pytest.approx(440, abs=2)
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.03)  # channel mean, not a weighted downmix


def test_raw_waveform_resampling_and_downmix():
    stereo = sine(1.0, 22050, channels=2)
    stereo[1] *= 0.0  # mean of a 0.5 tone and silence -> 0.25
    mono = resample_waveform(stereo, 22050)
    assert abs(len(mono) - 16000) <= 64
    assert np.abs(mono).max() == pytest.approx(0.25, abs=0.02)
    np.testing.assert_array_equal(resample_waveform(stereo.T, 22050), mono)  # (N, C) layout too


def test_audio_track_of_a_video(video_with_audio, video_no_audio):
    assert has_audio_stream(video_with_audio) and not has_audio_stream(video_no_audio)
    wave = load_audio(video_with_audio)
    assert abs(len(wave) - 32000) < 1000 and dominant_frequency(wave, 16000) == pytest.approx(440, abs=2)
    with pytest.raises(ValueError, match="no_audio.mp4' has no audio track"):
        load_audio(video_no_audio)


def test_not_a_media_file(tmp_path):
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="fake.wav"):
        load_audio(fake)


# ---------------------------------------------------------------------------------------- pass-through
def test_pass_through_to_a_transformers_feature_extractor():
    ast = ASTFeatureExtractor(num_mel_bins=32, max_length=64)
    waves = [noisy_tone(16000, seed=0), noisy_tone(16000, seed=1)]
    features = extract_audio_features(waves, 16000, ast, num_segments=2)
    assert features.shape == (2, 2, 64, 32) and features.dtype == np.float32
    halves = split_waveform(waves[1], 2)
    expected = ast(halves, sampling_rate=16000, return_tensors="np")["input_values"]
    np.testing.assert_allclose(features[1], expected)


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_pass_through_resamples_to_the_extractor_rate():
    whisper = WhisperFeatureExtractor(feature_size=8, sampling_rate=8000, chunk_length=1, n_fft=128, hop_length=32)
    tone = sine(1.0, 16000)[0]
    features = extract_audio_features([tone], 16000, whisper, num_segments=2)
    assert features.shape == (1, 2, 8, 250)
    expected = whisper(split_waveform(resample_waveform(tone, 16000, 8000), 2), sampling_rate=8000, return_tensors="np")
    np.testing.assert_allclose(features[0], expected["input_features"], atol=1e-6)
