"""CREMA input processing: decoding and sampling clips, derived visual modalities (optical flow, depth, surface
normals), audio features, point clouds, prompts, the bundled `CremaProcessor`, frozen-feature caching and the
`crema extract` command."""

from .audio import (
    CremaAudioFeatureExtractor,
    extract_audio_features,
    has_audio_stream,
    load_audio,
    resample_waveform,
    split_waveform,
)
from .depth import DepthEstimator, colorize_depth, render_depth
from .feature_cache import CremaDataCollator, FrozenFeatureCacher, cache_frozen_features
from .frame_sampling import align_indices, sample_frame_indices
from .optical_flow import compute_flow_image, farneback_flow, flow_to_color, register_flow_estimator
from .point_cloud import CremaPointCloudFeatureExtractor, load_point_cloud
from .processing_crema import CremaProcessor, register_crema_processor
from .prompts import (
    PROMPT_PRESETS,
    PromptPreset,
    build_multiple_choice_prompt,
    build_open_ended_prompt,
    build_prompt,
    build_target,
    get_prompt_preset,
    multiple_choice_target,
    parse_option_letter,
    post_process_answer,
)
from .surface_normals import normal_image_from_depth, normals_from_depth, render_normals
from .video_decoding import (
    ArraySource,
    FrameSource,
    ImageFolderSource,
    VideoDecodingError,
    VideoFileSource,
    open_frame_source,
    read_sampled_frames,
)
from .video_processing_crema import CremaVideoProcessor, RenderedClip


__all__ = [
    "PROMPT_PRESETS",
    "PromptPreset",
    "build_prompt",
    "build_target",
    "colorize_depth",
    "get_prompt_preset",
    "ArraySource",
    "CremaAudioFeatureExtractor",
    "CremaDataCollator",
    "CremaPointCloudFeatureExtractor",
    "CremaProcessor",
    "CremaVideoProcessor",
    "DepthEstimator",
    "FrameSource",
    "FrozenFeatureCacher",
    "ImageFolderSource",
    "RenderedClip",
    "VideoDecodingError",
    "VideoFileSource",
    "align_indices",
    "build_multiple_choice_prompt",
    "build_open_ended_prompt",
    "cache_frozen_features",
    "compute_flow_image",
    "extract_audio_features",
    "farneback_flow",
    "flow_to_color",
    "has_audio_stream",
    "load_audio",
    "load_point_cloud",
    "multiple_choice_target",
    "normal_image_from_depth",
    "normals_from_depth",
    "open_frame_source",
    "parse_option_letter",
    "post_process_answer",
    "read_sampled_frames",
    "register_crema_processor",
    "register_flow_estimator",
    "render_depth",
    "render_normals",
    "resample_waveform",
    "sample_frame_indices",
    "split_waveform",
]
