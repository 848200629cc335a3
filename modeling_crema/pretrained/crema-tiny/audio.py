"""Audio for the audio MMQA (DESIGN §1.2): decoding any file or a video's own track to 16 kHz mono with PyAV,
the BEATs-compatible Kaldi fbank (without torchaudio, like `ASTFeatureExtractor`'s numpy path), and a pass-through
to any `transformers` audio feature extractor for pluggable audio encoders."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import BatchFeature
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.utils import TensorType, logging

from .optional_dependencies import require_av


logger = logging.get_logger(__name__)

KALDI_FLOAT_EPSILON = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps, Kaldi's log floor
BEATS_FBANK_MEAN = 15.41663
BEATS_FBANK_STD = 6.55582
SEGMENT_STRATEGIES = ("consecutive", "uniform")


def has_audio_stream(path: str | os.PathLike) -> bool:
    """Whether a media file has at least one audio stream."""
    av = require_av("Reading audio tracks")
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as error:
        raise ValueError(f"Cannot read media file '{path}' ({error}).") from error


def _resampler_output(resampler: "av.AudioResampler", frame: "av.AudioFrame | None") -> list[np.ndarray]:
    """Resampled planar frames as (channels, samples) arrays."""
    return [out.to_ndarray() for out in resampler.resample(frame)]


def load_audio(path: str | os.PathLike, sampling_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of any file PyAV reads (wav, mp3, flac, the audio track of a video, ...),
    downmixed to mono and resampled to `sampling_rate`, as float32 in [-1, 1]."""
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Audio file not found: '{path}'.")
    av = require_av("Reading audio files")
    try:
        container = av.open(path)
    except av.error.FFmpegError as error:
        raise ValueError(f"Cannot read audio from '{path}': not a media file or corrupt ({error}).") from error
    try:
        if not container.streams.audio:
            raise ValueError(
                f"'{path}' has no audio track, but the 'audio' modality was requested. Pass a separate audio "
                "file (audio=PATH) or leave the audio modality out for this clip."
            )
        stream = container.streams.audio[0]
        # Resample with the source layout kept, then average the channels ourselves: libswresample's own
        # downmix weights channels (-3 dB centre mix), the reference takes the plain mean.
        resampler = None
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sampling_rate)
                frame.pts = None  # let the resampler run on sample counts, robust to odd timestamps
                chunks.extend(_resampler_output(resampler, frame))
        except av.error.FFmpegError as error:
            logger.warning(f"Decoding the audio of '{path}' stopped early; the file looks truncated ({error}).")
        if resampler is not None:
            chunks.extend(_resampler_output(resampler, None))
    finally:
        container.close()
    waveform = np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if waveform.size == 0:
        raise ValueError(f"The audio track of '{path}' contains no samples.")
    return waveform


def to_mono(waveform: np.ndarray) -> np.ndarray:
    """(N,), (C, N) or (N, C) -> (N,) float32 by averaging channels (the smaller axis is taken as channels)."""
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"Expected a waveform of shape (N,), (C, N) or (N, C), got {waveform.shape}.")
    channel_axis = 0 if waveform.shape[0] <= waveform.shape[1] else 1
    return waveform.mean(axis=channel_axis).astype(np.float32)


def resample_waveform(waveform: np.ndarray, orig_sampling_rate: int, sampling_rate: int = 16000) -> np.ndarray:
    """Downmix to mono and resample a float waveform with PyAV's (libswresample) resampler."""
    mono = to_mono(waveform)
    if int(orig_sampling_rate) == int(sampling_rate) or mono.size == 0:
        return mono
    av = require_av(f"Resampling audio from {int(orig_sampling_rate)} Hz to {int(sampling_rate)} Hz")
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None, :]), format="fltp", layout="mono")
    frame.sample_rate = int(orig_sampling_rate)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=int(sampling_rate))
    out = _resampler_output(resampler, frame) + _resampler_output(resampler, None)
    return np.concatenate(out, axis=1)[0].astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def check_waveform(waveform: np.ndarray, name: str = "audio") -> None:
    """Refuse empty or non-finite audio instead of passing silence/NaN on."""
    if waveform.size == 0:
        raise ValueError(f"{name}: the waveform is empty.")
    if not np.isfinite(waveform).all():
        raise ValueError(f"{name}: the waveform contains NaN or infinite values.")


class CremaAudioFeatureExtractor(SequenceFeatureExtractor):
    """BEATs-compatible input features: 16 kHz mono, waveform x 2**15, Kaldi fbank (128 mel, 25 ms / 10 ms,
    povey window, pre-emphasis 0.97, DC removal, no dither), normalised (x - 15.41663) / (2 * 6.55582), zero-padded
    or truncated and split into `num_segments` segments of `segment_length` frames.

    Output `input_values`: (batch, num_segments, segment_length, feature_size).

    `segment_strategy="consecutive"` is the reference (LAVIS BEATs processor): the first
    num_segments x segment_length frames (about 10 s at paper size). `"uniform"` spreads the segments evenly
    over the whole clip instead (useful for long audio)."""

    model_input_names = ["input_values"]

    def __init__(
        self,
        feature_size: int = 128,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        num_segments: int = 2,
        segment_length: int = 512,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        min_frequency: float = 20.0,
        preemphasis: float = 0.97,
        waveform_scale: float = 2.0**15,
        fbank_mean: float = BEATS_FBANK_MEAN,
        fbank_std: float = BEATS_FBANK_STD,
        segment_strategy: str = "consecutive",
        **kwargs: Any,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if segment_strategy not in SEGMENT_STRATEGIES:
            raise ValueError(f"segment_strategy must be one of {SEGMENT_STRATEGIES}, got {segment_strategy!r}.")
        self.num_segments = num_segments
        self.segment_length = segment_length
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.min_frequency = min_frequency
        self.preemphasis = preemphasis
        self.waveform_scale = waveform_scale
        self.fbank_mean = fbank_mean
        self.fbank_std = fbank_std
        self.segment_strategy = segment_strategy

    @property
    def mel_filters(self) -> np.ndarray:
        """Kaldi mel filter bank (fft bins x mel bins), built once. With 128 mel bins some low filters are empty,
        exactly as in Kaldi/torchaudio; the transformers warning about it is silenced."""
        key = (self.fft_length, self.feature_size, self.min_frequency, self.sampling_rate)
        if getattr(self, "_mel_cache_key", None) != key:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*mel filter has all zero values.*")
                self._mel_filters = mel_filter_bank(
                    num_frequency_bins=self.fft_length // 2 + 1,
                    num_mel_filters=self.feature_size,
                    min_frequency=self.min_frequency,
                    max_frequency=self.sampling_rate / 2,
                    sampling_rate=self.sampling_rate,
                    norm=None,
                    mel_scale="kaldi",
                    triangularize_in_mel_space=True,
                )
            self._mel_cache_key = key
        return self._mel_filters

    def to_dict(self) -> dict[str, Any]:
        # cached arrays are derived state, not configuration
        return {k: v for k, v in super().to_dict().items() if not k.startswith("_")}

    @property
    def window_samples(self) -> int:
        return int(round(self.sampling_rate * self.frame_length_ms / 1000.0))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sampling_rate * self.frame_shift_ms / 1000.0))

    @property
    def fft_length(self) -> int:
        return 1 << (self.window_samples - 1).bit_length()  # Kaldi round_to_power_of_two

    def kaldi_fbank(self, waveform: np.ndarray) -> np.ndarray:
        """Log mel filter bank energies like `torchaudio.compliance.kaldi.fbank` with the BEATs settings
        (snip_edges, no energy); input float waveform at `sampling_rate`, output (frames, feature_size)."""
        if waveform.size < self.window_samples:
            raise ValueError(
                f"Audio of {waveform.size} samples is shorter than one {self.frame_length_ms:g} ms analysis window."
            )
        fbank = spectrogram(
            waveform.astype(np.float64) * self.waveform_scale,
            window_function(self.window_samples, "povey", periodic=False),
            frame_length=self.window_samples,
            hop_length=self.hop_samples,
            fft_length=self.fft_length,
            power=2.0,
            center=False,
            preemphasis=self.preemphasis,
            mel_filters=self.mel_filters,
            log_mel="log",
            mel_floor=KALDI_FLOAT_EPSILON,
            remove_dc_offset=True,
        )
        return fbank.T.astype(np.float32)

    def _needed_samples(self) -> int:
        frames = self.num_segments * self.segment_length
        return self.window_samples + (frames - 1) * self.hop_samples

    def segments(self, waveform: np.ndarray) -> np.ndarray:
        """One mono waveform at `sampling_rate` -> (num_segments, segment_length, feature_size) float32."""
        check_waveform(waveform)
        if self.segment_strategy == "consecutive":
            waveform = waveform[: self._needed_samples()]  # frames beyond the segments are never used
        fbank = (self.kaldi_fbank(waveform) - self.fbank_mean) / (2.0 * self.fbank_std)
        total = self.num_segments * self.segment_length
        out = np.full((self.num_segments, self.segment_length, self.feature_size), self.padding_value, np.float32)
        if self.segment_strategy == "consecutive":
            flat = out.reshape(total, self.feature_size)
            used = min(total, fbank.shape[0])
            flat[:used] = fbank[:used]
        else:
            starts = np.linspace(0, max(0, fbank.shape[0] - self.segment_length), self.num_segments).astype(int)
            for k, start in enumerate(starts):
                piece = fbank[start : start + self.segment_length]
                out[k, : piece.shape[0]] = piece
        return out

    def __call__(
        self,
        raw_audio: np.ndarray | Sequence[np.ndarray] | Sequence[float],
        sampling_rate: int | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Featurize one waveform or a batch of waveforms (mono, or multi-channel: downmixed); audio at another
        `sampling_rate` is resampled first."""
        if sampling_rate is None:
            logger.warning(
                f"No `sampling_rate` given to {self.__class__.__name__}; assuming {self.sampling_rate} Hz. Pass it "
                "to avoid silent errors."
            )
            sampling_rate = self.sampling_rate
        batch = _as_waveform_batch(raw_audio)
        features = [self.segments(resample_waveform(w, sampling_rate, self.sampling_rate)) for w in batch]
        return BatchFeature({"input_values": np.stack(features)}, tensor_type=return_tensors)


def _as_waveform_batch(raw_audio: Any) -> list[np.ndarray]:
    """A single waveform (1-D list/array) or a batch (list of arrays, or 2-D array of mono rows) -> list."""
    if hasattr(raw_audio, "detach"):
        raw_audio = raw_audio.detach().cpu().numpy()
    if isinstance(raw_audio, np.ndarray):
        return [raw_audio] if raw_audio.ndim == 1 else list(raw_audio)
    if isinstance(raw_audio, (list, tuple)) and raw_audio and np.isscalar(raw_audio[0]):
        return [np.asarray(raw_audio, dtype=np.float32)]
    return [w.detach().cpu().numpy() if hasattr(w, "detach") else np.asarray(w, dtype=np.float32) for w in raw_audio]


def split_waveform(waveform: np.ndarray, num_segments: int) -> list[np.ndarray]:
    """Cut a waveform into `num_segments` equal consecutive pieces (for pass-through extractors)."""
    check_waveform(waveform)
    bounds = np.linspace(0, waveform.size, num_segments + 1).astype(int)
    return [waveform[a:b] if b > a else waveform[a : a + 1] for a, b in zip(bounds[:-1], bounds[1:])]


def extract_audio_features(
    waveforms: Sequence[np.ndarray],
    sampling_rate: int,
    feature_extractor: Any,
    num_segments: int | None = None,
) -> np.ndarray:
    """(B, S, ...) audio features from B mono waveforms at `sampling_rate`.

    With a `CremaAudioFeatureExtractor` this is the BEATs fbank; with any other `transformers` audio feature
    extractor (ASTFeatureExtractor, WhisperFeatureExtractor, ClapFeatureExtractor, ...) each waveform is resampled
    to that extractor's rate, cut into `num_segments` equal pieces, and the extractor's main output
    (`model_input_names[0]`) of each piece is stacked."""
    if isinstance(feature_extractor, CremaAudioFeatureExtractor):
        return feature_extractor(list(waveforms), sampling_rate=sampling_rate, return_tensors="np")["input_values"]
    target_rate = getattr(feature_extractor, "sampling_rate", None) or sampling_rate
    num_segments = num_segments or 1
    main_key = feature_extractor.model_input_names[0]
    batch = []
    for waveform in waveforms:
        pieces = split_waveform(resample_waveform(waveform, sampling_rate, target_rate), num_segments)
        outputs = feature_extractor(pieces, sampling_rate=target_rate, return_tensors="np")
        if main_key not in outputs:
            raise ValueError(
                f"{type(feature_extractor).__name__} returned {list(outputs)}, without its main input "
                f"'{main_key}'."
            )
        batch.append(np.asarray(outputs[main_key], dtype=np.float32))
    shapes = {b.shape for b in batch}
    if len(shapes) != 1:
        raise ValueError(
            f"{type(feature_extractor).__name__} produced differently shaped features {sorted(shapes)} for the "
            "clips of one batch; configure it to pad/truncate to a fixed length."
        )
    return np.stack(batch)
