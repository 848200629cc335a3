"""`CremaVideoProcessor`: clips -> `{m}_pixel_values` for every visual modality (RGB frames, optical flow, depth,
surface normals, and companion clips such as thermal or touch), all rendered to RGB and normalised like BLIP-2
(DESIGN §1.2). Derived and companion modalities use the same frame indices as the RGB frames."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from transformers import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.utils import TensorType, logging
from transformers.video_processing_utils import VideoProcessorMixin

from .depth import DEPTH_MODEL_HINT, DepthEstimator, render_depth
from .frame_sampling import align_indices
from .optical_flow import FlowEstimator, compute_flow_image
from .surface_normals import normal_image_from_depth
from .video_decoding import IMAGE_EXTENSIONS, FrameSource, open_frame_source, read_sampled_frames


logger = logging.get_logger(__name__)

DERIVED_MODALITIES = ("flow", "depth", "normal")
"""Visual modalities computed from the RGB clip itself."""


@dataclass
class RenderedClip:
    """One clip's visual modalities as HxWx3 uint8 RGB images (before resizing/normalisation), with the frame
    indices each modality was read at (companion clips: indices in their own numbering, aligned in time)."""

    frame_indices: dict[str, list[int]] = field(default_factory=dict)
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    num_total_frames: int = 0
    source_name: str = ""


class CremaVideoProcessor(VideoProcessorMixin, PilBackend):
    r"""Video processor for CREMA's visual modalities.

    Frames are decoded one at a time (PyAV; long sides above `max_decode_side` are shrunk while decoding so
    memory stays bounded), `num_frames` of them sampled by uniform segments (a random index per segment when
    `training`, the middle one otherwise) or at `sample_fps`. Each modality image is then resized (bicubic) to
    `size`, rescaled by 1/255 and normalised with the CLIP mean/std, exactly like `BlipImageProcessor`.

    Optical flow: Farneback (OpenCV) between each sampled frame and its next decoded frame, colour-coded; other
    estimators plug in via `register_flow_estimator` + `flow_method`. Depth: any `transformers` depth-estimation
    model (`depth_model_name_or_path`: a Hub id or local folder, saved with the processor and loaded on first use;
    `depth_estimator=` also takes a model id/path, a `DepthEstimator` or any callable frames -> depth maps, here or
    per call). Normals: finite differences of that depth.

    Output of `__call__`: `{m}_pixel_values` float32 (B, T, 3, H, W) and `{m}_frame_indices` long (B, T) per
    modality m."""

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 4
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        num_frames: int = 4,
        frame_sampling: str = "uniform",
        sample_fps: float | None = None,
        max_decode_side: int | None = 1024,
        decoding_backend: str = "pyav",
        flow_method: str = "farneback",
        flow_max_side: int | None = 320,
        flow_max_magnitude: float | None = None,
        farneback_params: dict[str, Any] | None = None,
        depth_model_name_or_path: str | os.PathLike | None = None,
        depth_colormap: str = "gray",
        normal_strength: float = 1.0,
        depth_estimator: DepthEstimator | str | os.PathLike | Callable | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.num_frames = num_frames
        self.frame_sampling = frame_sampling
        self.sample_fps = sample_fps
        self.max_decode_side = max_decode_side
        self.decoding_backend = decoding_backend
        self.flow_method = flow_method
        self.flow_max_side = flow_max_side
        self.flow_max_magnitude = flow_max_magnitude
        self.farneback_params = dict(farneback_params or {})
        if depth_model_name_or_path is not None and not isinstance(depth_model_name_or_path, (str, os.PathLike)):
            raise ValueError(
                "`depth_model_name_or_path` is a depth-estimation model id or local folder (a string); pass a loaded "
                f"estimator ({type(depth_model_name_or_path).__name__}) as `depth_estimator=` instead."
            )
        self.depth_colormap = depth_colormap
        self.normal_strength = normal_strength
        # loaded depth models by name (loaded on first use) and an estimator object given at construction
        self._loaded_depth_models: dict[str, DepthEstimator] = {}
        self._depth_estimator: Any = None
        if depth_estimator is not None and not isinstance(depth_estimator, (str, os.PathLike)):
            self._depth_estimator = _check_depth_estimator(depth_estimator)
            depth_estimator = getattr(depth_estimator, "model_name_or_path", None)  # a DepthEstimator's model
        if depth_estimator is not None:
            if depth_model_name_or_path is not None and str(depth_model_name_or_path) != str(depth_estimator):
                raise ValueError(
                    f"Two depth models were given: depth_model_name_or_path={str(depth_model_name_or_path)!r} and "
                    f"depth_estimator={str(depth_estimator)!r}; pass one."
                )
            depth_model_name_or_path = depth_estimator
        self.depth_model_name_or_path = str(depth_model_name_or_path) if depth_model_name_or_path else None

    def to_dict(self) -> dict[str, Any]:
        # Loaded models (the depth estimator) are runtime state, not configuration.
        output = super().to_dict()
        return {k: v for k, v in output.items() if not k.startswith("_")}

    # ----------------------------------------------------------------------------------------- models
    def get_depth_estimator(self, depth_estimator: Any = None) -> Any:
        """The depth estimator to use: `depth_estimator` when given (a model id or path is loaded once and kept),
        else the one given at construction, else the model named by `depth_model_name_or_path`, loaded on first
        use. Raises a ValueError naming `depth_model_name_or_path` when there is none."""
        if depth_estimator is None:
            if self._depth_estimator is not None:
                return self._depth_estimator
            depth_estimator = self.depth_model_name_or_path
            if not depth_estimator:
                raise ValueError(
                    "The 'depth' and 'normal' modalities need a depth-estimation model, and none is configured: pass "
                    "`depth_model_name_or_path=` (e.g. `CremaProcessor.from_model_config(config, tokenizer, "
                    "depth_model_name_or_path=...)` or `CremaVideoProcessor(depth_model_name_or_path=...)`; it is "
                    f"saved with the processor), or `depth_estimator=` in the call ({DEPTH_MODEL_HINT})."
                )
        if isinstance(depth_estimator, (str, os.PathLike)):
            name = str(depth_estimator)
            if name not in self._loaded_depth_models:
                self._loaded_depth_models[name] = DepthEstimator(name)
            return self._loaded_depth_models[name]
        return _check_depth_estimator(depth_estimator)

    @property
    def has_depth_estimator(self) -> bool:
        """Whether depth and normals can be computed without passing `depth_estimator=` to the call."""
        return bool(self.depth_model_name_or_path) or self._depth_estimator is not None

    # ------------------------------------------------------------------------------------- rendering
    def render_clip(
        self,
        video: Any = None,
        modalities: Sequence[str] = ("video",),
        companions: Mapping[str, Any] | None = None,
        *,
        training: bool = False,
        generator: np.random.Generator | int | None = None,
        num_frames: int | None = None,
        frame_indices: Sequence[int] | None = None,
        depth_estimator: DepthEstimator | str | os.PathLike | Any | None = None,
        flow_estimator: FlowEstimator | None = None,
    ) -> RenderedClip:
        """Decode and render one clip's visual modalities as RGB uint8 images.

        `modalities` lists what to derive from `video` ("video" = the RGB frames, "flow", "depth", "normal");
        `companions` maps other visual modality names (e.g. "thermal", "touch", or a precomputed "depth") to
        their own clips (video file, frame folder, frames array), read at the same time positions as `video`.
        Without `video`, the first companion sets the frame indices."""
        companions = dict(companions or {})
        num_frames = num_frames or self.num_frames
        unknown = [m for m in modalities if m != "video" and m not in DERIVED_MODALITIES and m not in companions]
        if unknown:
            raise ValueError(
                f"Unknown visual modalities {unknown}: derived ones are {('video',) + DERIVED_MODALITIES}; give "
                "other visual modalities as companion clips (e.g. thermal=..., touch=...)."
            )
        derived = [m for m in modalities if m in DERIVED_MODALITIES and m not in companions]
        wants_video = "video" in modalities or bool(derived)
        rendered = RenderedClip()
        clock_name, clock = None, None
        if wants_video:
            if video is None:
                raise ValueError(
                    f"Modalities {list(modalities)} are derived from the RGB clip, but no video was given."
                )
            clock_name, clock = "video", open_frame_source(video, backend=self.decoding_backend)
        elif companions:
            clock_name = next(iter(companions))
            clock = open_frame_source(companions.pop(clock_name), backend=self.decoding_backend, name=clock_name)
        else:
            raise ValueError("No visual input: pass a video or a companion clip.")

        sampled = read_sampled_frames(
            clock,
            num_frames,
            mode=self.frame_sampling,
            training=training,
            generator=generator,
            sample_fps=self.sample_fps,
            max_side=self.max_decode_side,
            with_flow_pairs="flow" in derived,
            indices=frame_indices,
        )
        rendered.num_total_frames, rendered.source_name = sampled.num_total, sampled.source_name
        if clock_name != "video" or "video" in modalities:
            rendered.images[clock_name] = sampled.frames
            rendered.frame_indices[clock_name] = sampled.indices

        if "flow" in derived:
            method = flow_estimator or self.flow_method
            params = self.farneback_params if method == "farneback" else {}
            rendered.images["flow"] = [
                compute_flow_image(a, b, method, self.flow_max_side, self.flow_max_magnitude, **params)[0]
                for a, b in sampled.flow_pairs
            ]
        if "depth" in derived or "normal" in derived:
            depths = self.get_depth_estimator(depth_estimator)(sampled.frames)
            if "depth" in derived:
                rendered.images["depth"] = [render_depth(d, self.depth_colormap) for d in depths]
            if "normal" in derived:
                rendered.images["normal"] = [normal_image_from_depth(d, self.normal_strength) for d in depths]
        for name in derived:
            rendered.frame_indices[name] = sampled.indices

        for name, clip in companions.items():
            source = open_frame_source(clip, backend=self.decoding_backend, name=name)
            rendered.images[name], rendered.frame_indices[name] = self._read_companion(
                name, source, sampled.indices, sampled.num_total, num_frames
            )
        order = [m for m in modalities if m in rendered.images] + [m for m in rendered.images if m not in modalities]
        rendered.images = {m: rendered.images[m] for m in order}
        rendered.frame_indices = {m: rendered.frame_indices[m] for m in order}
        return rendered

    def _read_companion(
        self, name: str, source: FrameSource, indices: list[int], num_total: int, num_frames: int
    ) -> tuple[list[np.ndarray], list[int]]:
        count = source.num_frames()
        if count != num_total:
            logger.warning(
                f"Companion '{name}' clip '{source.name}' has {count} frames but the main clip has {num_total}; "
                "its frames are matched by relative time position."
            )
        aligned = align_indices(indices, num_total, count)
        sampled = read_sampled_frames(source, num_frames, indices=aligned, max_side=self.max_decode_side)
        return sampled.frames, sampled.indices

    # -------------------------------------------------------------------------------- normalisation
    def images_to_pixel_values(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 images -> (T, 3, H, W) float32: bicubic resize to `size`, rescale 1/255, CLIP mean/std
        (the transformers PIL backend, same operations as `BlipImageProcessor`)."""
        size = self.size if isinstance(self.size, SizeDict) else SizeDict(**self.size)
        out = []
        for image in images:
            array = np.moveaxis(np.asarray(image), -1, 0)
            if self.do_resize:
                array = self.resize(array, size=size, resample=self.resample)
            if self.do_rescale:
                array = self.rescale(array, self.rescale_factor)
            if self.do_normalize:
                array = self.normalize(array, self.image_mean, self.image_std)
            out.append(np.asarray(array, dtype=np.float32))
        return np.stack(out)

    def __call__(
        self,
        videos: Any = None,
        modalities: Sequence[str] = ("video",),
        companions: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Same as `preprocess`."""
        return self.preprocess(videos, modalities, companions, **kwargs)

    def preprocess(
        self,
        videos: Any = None,
        modalities: Sequence[str] = ("video",),
        companions: Mapping[str, Any] | None = None,
        *,
        training: bool = False,
        generator: np.random.Generator | int | None = None,
        num_frames: int | None = None,
        depth_estimator: DepthEstimator | str | os.PathLike | Any | None = None,
        flow_estimator: FlowEstimator | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """One clip or a list of clips (video paths, frame folders, frames arrays) -> BatchFeature with
        `{m}_pixel_values` (B, T, 3, H, W) and `{m}_frame_indices` (B, T). `companions` maps a modality name to
        one clip per video (a list when batched). Training-time sampling is random per segment; pass a seeded
        `generator` (numpy Generator or int) for reproducibility."""
        if kwargs:
            raise TypeError(f"Unexpected arguments for {self.__class__.__name__}: {sorted(kwargs)}.")
        companions = dict(companions or {})
        batch_size, clips, per_clip_companions = _split_batch(videos, companions)
        rng = generator
        if training and not isinstance(generator, np.random.Generator):
            rng = np.random.default_rng(generator)
        pixel_values: dict[str, list[np.ndarray]] = {}
        indices: dict[str, list[list[int]]] = {}
        for b in range(batch_size):
            rendered = self.render_clip(
                clips[b], modalities, per_clip_companions[b], training=training, generator=rng,
                num_frames=num_frames, depth_estimator=depth_estimator, flow_estimator=flow_estimator,
            )
            for name, images in rendered.images.items():
                pixel_values.setdefault(name, []).append(self.images_to_pixel_values(images))
                indices.setdefault(name, []).append(rendered.frame_indices[name])
        data: dict[str, Any] = {}
        for name in pixel_values:
            if len(pixel_values[name]) != batch_size:
                raise ValueError(f"Modality '{name}' is missing for some clips of the batch.")
            data[f"{name}_pixel_values"] = np.stack(pixel_values[name])
            data[f"{name}_frame_indices"] = np.asarray(indices[name], dtype=np.int64)
        return BatchFeature(data, tensor_type=return_tensors)


def _check_depth_estimator(estimator: Any) -> Any:
    if not callable(estimator):
        raise ValueError(
            "`depth_estimator` must be a depth-estimation model id or path, a `DepthEstimator`, or a callable mapping "
            f"RGB frames to depth maps; got {type(estimator).__name__}."
        )
    return estimator


def _is_single_clip(video: Any) -> bool:
    """A single clip (path, frames array, list of frames) rather than a batch of clips."""
    if video is None or isinstance(video, (str, FrameSource)) or hasattr(video, "__fspath__"):
        return True
    if hasattr(video, "ndim"):
        return video.ndim <= 4
    if isinstance(video, (list, tuple)):
        if not video:
            return True
        first = video[0]
        if isinstance(first, (str,)) or hasattr(first, "__fspath__"):
            # a list of video paths is a batch; a list of image paths is one clip
            return str(first).lower().endswith(IMAGE_EXTENSIONS)
        if hasattr(first, "ndim"):
            return first.ndim <= 3
        return hasattr(first, "size") and hasattr(first, "mode")  # PIL images
    return True


def _split_batch(videos: Any, companions: dict[str, Any]) -> tuple[int, list[Any], list[dict[str, Any]]]:
    """Work out the batch size and give each clip its own companions dict."""
    batched = not _is_single_clip(videos)
    clips = list(videos) if batched else [videos]
    batch_size = len(clips)
    if videos is None and companions:
        first = next(iter(companions.values()))
        batch_size = 1 if _is_single_clip(first) else len(first)
        clips = [None] * batch_size
    per_clip: list[dict[str, Any]] = [{} for _ in range(batch_size)]
    for name, value in companions.items():
        values = [value] if _is_single_clip(value) else list(value)
        if len(values) != batch_size:
            raise ValueError(f"Got {len(values)} '{name}' clip(s) for a batch of {batch_size} video(s).")
        for b in range(batch_size):
            per_clip[b][name] = values[b]
    return batch_size, clips, per_clip
