"""Pre-extracted 3D point-cloud features (3D-LLM style, DESIGN §1.2 / §4): loading `.pt` / `.npy` files and
padding or sampling every scene to a fixed number of points with an attention mask (the reference did not mask).

Two sampling modes (`CremaPointCloudFeatureExtractor(sampling=...)`):

- "random" (default): a scene with more than `num_points` points keeps a random subset (seeded when training, a
  fixed seed when evaluating); padding is masked out (`attention_mask` 0).
- "reference": what the reference loader does. Its `torch.sort(torch.randperm(N)[:5000])[1]` keeps the sort
  *positions* (a permutation of 0..4999), not the sampled indices, so it always takes the first `num_points`
  points (in shuffled order, which the Q-Former's cross-attention does not see); padding is zeros and is NOT
  masked (`attention_mask` all ones), so padded points take part in the attention as in the reference.

The 3D-LLM layout keeps features and voxels in sibling folders, `voxelized_features_sam_nonzero_preprocess/` and
`voxelized_voxels_sam_nonzero_preprocess/`: `load_point_cloud(features_path)` finds the voxels there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.utils import TensorType, logging


logger = logging.get_logger(__name__)

FEATURE_KEYS = ("features", "feats", "feat", "point_features")
COORDINATE_KEYS = ("coordinates", "coords", "voxels", "points", "xyz")
POINT_SAMPLING_MODES = ("random", "reference")
#: The reference's (3D-LLM's) folders of point features and of their voxel coordinates, side by side.
REFERENCE_FEATURES_FOLDER = "voxelized_features_sam_nonzero_preprocess"
REFERENCE_VOXELS_FOLDER = "voxelized_voxels_sam_nonzero_preprocess"


def voxel_path_candidates(feature_path: str | os.PathLike) -> list[Path]:
    """Where the voxel coordinates of a features file may be: beside it (same stem, `.npy` or `.pt`), then in the
    sibling voxels folder when the file sits in a features folder (`voxelized_features_*` ->
    `voxelized_voxels_*`, or any folder name with "features" -> "voxels")."""
    path = Path(feature_path)
    candidates = [path.with_suffix(s) for s in (".npy", ".pt") if path.with_suffix(s) != path]
    folder = path.parent
    if folder.name == REFERENCE_FEATURES_FOLDER:
        sibling = folder.with_name(REFERENCE_VOXELS_FOLDER)
    elif "features" in folder.name:
        sibling = folder.with_name(folder.name.replace("features", "voxels"))
    else:
        sibling = None
    if sibling is not None:
        candidates += [sibling / f"{path.stem}{s}" for s in (".npy", ".pt")]
    return candidates


def reference_point_cloud_paths(root: str | os.PathLike, scene_id: str) -> tuple[Path, Path]:
    """(features, voxels) paths of a scene in the reference layout under `root`:
    `{root}/voxelized_features_sam_nonzero_preprocess/{scene}.pt` and
    `{root}/voxelized_voxels_sam_nonzero_preprocess/{scene}.npy`."""
    root = Path(root)
    return root / REFERENCE_FEATURES_FOLDER / f"{scene_id}.pt", root / REFERENCE_VOXELS_FOLDER / f"{scene_id}.npy"


def _load_array(path: Path) -> Any:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if path.suffix in (".pt", ".pth", ".bin"):
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(path))
    raise ValueError(f"Unsupported point-cloud file '{path}': use .pt, .npy, .npz or .safetensors.")


def _pick(data: dict, keys: Sequence[str], path: Path, what: str) -> Any:
    for key in keys:
        if key in data:
            return data[key]
    raise ValueError(f"'{path}' holds keys {sorted(data)}; none of {list(keys)} for the point {what}.")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def load_point_cloud(
    features: str | os.PathLike, coordinates: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one scene: `features` = `{scene}.pt` / `.npy` of shape [N, D] (or a dict/npz holding both arrays),
    `coordinates` = `{scene}.npy` of voxel coordinates [N, 3]. When `coordinates` is None it is looked for inside
    the file (dict keys), next to it (same stem, the other extension), or in the sibling voxels folder of the
    reference layout (`voxelized_voxels_sam_nonzero_preprocess/{scene}.npy`)."""
    feature_path = Path(features)
    if not feature_path.exists():
        raise FileNotFoundError(f"Point-cloud feature file not found: '{feature_path}'.")
    data = _load_array(feature_path)
    coords = None
    if isinstance(data, dict):
        feats = _pick(data, FEATURE_KEYS, feature_path, "features")
        if coordinates is None and any(k in data for k in COORDINATE_KEYS):
            coords = _pick(data, COORDINATE_KEYS, feature_path, "coordinates")
    else:
        feats = data
    if coords is None:
        if coordinates is None:
            found = [c for c in voxel_path_candidates(feature_path) if c.exists()]
            if not found:
                raise FileNotFoundError(
                    f"No voxel coordinates for '{feature_path}': pass them explicitly or put "
                    f"'{feature_path.with_suffix('.npy').name}' beside it (or in the sibling folder "
                    f"'{REFERENCE_VOXELS_FOLDER}/')."
                )
            coordinates = found[0]
        coords = _load_array(Path(coordinates))
        if isinstance(coords, dict):
            coords = _pick(coords, COORDINATE_KEYS, Path(coordinates), "coordinates")
    return _to_numpy(feats).astype(np.float32), _to_numpy(coords)


class CremaPointCloudFeatureExtractor(FeatureExtractionMixin):
    """Fixed-size point-cloud inputs: `features` (B, N, D) float32, `coordinates` (B, N, 3) long voxel indices in
    [0, voxel_size), `attention_mask` (B, N) long (1 = real point, 0 = padding). With `sampling="random"`
    (default), scenes with more than `num_points` points are randomly subsampled (a seeded generator when
    training; a fixed seed when evaluating so results are reproducible); scenes with fewer are zero-padded and the
    padding is masked. With `sampling="reference"` (the reference loader, see the module docstring) the first
    `num_points` points are kept and the zero padding is not masked (`attention_mask` all ones)."""

    model_input_names = ["features", "coordinates", "attention_mask"]

    def __init__(
        self,
        num_points: int = 5000,
        voxel_size: int = 256,
        feature_size: int | None = None,
        eval_seed: int = 0,
        rescale_coordinates: bool = False,
        sampling: str = "random",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if sampling not in POINT_SAMPLING_MODES:
            raise ValueError(f"Unknown point sampling {sampling!r}; choose one of {POINT_SAMPLING_MODES}.")
        self.sampling = sampling
        self.num_points = num_points
        self.voxel_size = voxel_size
        self.feature_size = feature_size
        self.eval_seed = eval_seed
        self.rescale_coordinates = rescale_coordinates

    def _coordinates(self, coords: np.ndarray, name: str) -> np.ndarray:
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"{name}: voxel coordinates must have shape [N, 3], got {coords.shape}.")
        if not np.isfinite(coords.astype(np.float64)).all():
            raise ValueError(f"{name}: voxel coordinates contain NaN or infinite values.")
        if self.rescale_coordinates:
            coords = coords.astype(np.float64)
            low = coords.min(axis=0, keepdims=True)
            span = np.maximum(coords.max(axis=0, keepdims=True) - low, 1e-12)
            coords = np.floor((coords - low) / span * (self.voxel_size - 1) + 0.5)
        if np.issubdtype(coords.dtype, np.floating) and not np.allclose(coords, np.round(coords)):
            raise ValueError(
                f"{name}: voxel coordinates are not integers. Pass voxel indices in [0, {self.voxel_size}) or set "
                "rescale_coordinates=True to voxelise raw xyz."
            )
        coords = np.round(coords).astype(np.int64)
        if coords.size and (coords.min() < 0 or coords.max() >= self.voxel_size):
            raise ValueError(
                f"{name}: voxel coordinates range over [{coords.min()}, {coords.max()}], outside [0, "
                f"{self.voxel_size}). Voxelise them to a {self.voxel_size}^3 grid or set rescale_coordinates=True."
            )
        return coords

    def pad_or_sample(
        self,
        features: Any,
        coordinates: Any,
        training: bool = False,
        generator: np.random.Generator | int | None = None,
        name: str = "point_cloud",
        sampling: str | None = None,
    ) -> dict[str, np.ndarray]:
        """One scene -> fixed-size arrays (see the class docstring); `sampling` overrides the extractor's mode."""
        sampling = self.sampling if sampling is None else sampling
        if sampling not in POINT_SAMPLING_MODES:
            raise ValueError(f"Unknown point sampling {sampling!r}; choose one of {POINT_SAMPLING_MODES}.")
        feats = _to_numpy(features).astype(np.float32)
        if feats.ndim != 2:
            raise ValueError(f"{name}: point features must have shape [N, D], got {feats.shape}.")
        if not np.isfinite(feats).all():
            raise ValueError(f"{name}: point features contain NaN or infinite values.")
        if self.feature_size is not None and feats.shape[1] != self.feature_size:
            raise ValueError(f"{name}: point features have {feats.shape[1]} dims, expected {self.feature_size}.")
        coords = self._coordinates(_to_numpy(coordinates), name)
        if coords.shape[0] != feats.shape[0]:
            raise ValueError(
                f"{name}: {feats.shape[0]} feature rows but {coords.shape[0]} coordinate rows; they must match."
            )
        count = feats.shape[0]
        if count == 0:
            raise ValueError(f"{name}: the scene has zero points.")
        if count > self.num_points and sampling == "reference":
            feats, coords, count = feats[: self.num_points], coords[: self.num_points], self.num_points
        elif count > self.num_points:
            if training:
                rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
            else:
                rng = np.random.default_rng(self.eval_seed)
            keep = np.sort(rng.choice(count, size=self.num_points, replace=False))
            feats, coords, count = feats[keep], coords[keep], self.num_points
        out_feats = np.zeros((self.num_points, feats.shape[1]), dtype=np.float32)
        out_coords = np.zeros((self.num_points, 3), dtype=np.int64)
        mask = np.zeros((self.num_points,), dtype=np.int64)
        out_feats[:count], out_coords[:count], mask[:count] = feats, coords, 1
        if sampling == "reference":
            mask[:] = 1  # the reference attends to its zero padding
        return {"features": out_feats, "coordinates": out_coords, "attention_mask": mask}

    def __call__(
        self,
        point_clouds: Any,
        training: bool = False,
        generator: np.random.Generator | int | None = None,
        return_tensors: str | TensorType | None = None,
        sampling: str | None = None,
    ) -> BatchFeature:
        """`point_clouds`: one scene or a list of scenes, each a (features, coordinates) pair, a dict with those
        keys, or a path to a features file (coordinates found beside it or in the sibling voxels folder).
        `sampling` ("random" / "reference") overrides the extractor's mode for this call."""
        scenes = [point_clouds] if _is_single_scene(point_clouds) else list(point_clouds)
        rows = []
        for k, scene in enumerate(scenes):
            name = f"point_cloud[{k}]"
            if isinstance(scene, (str, os.PathLike)):
                name = str(scene)
                scene = load_point_cloud(scene)
            elif isinstance(scene, dict):
                scene = (
                    _pick(scene, FEATURE_KEYS, Path(name), "features"),
                    _pick(scene, COORDINATE_KEYS, Path(name), "coordinates"),
                )
            rows.append(self.pad_or_sample(
                scene[0], scene[1], training=training, generator=generator, name=name, sampling=sampling
            ))
        dims = {r["features"].shape[1] for r in rows}
        if len(dims) != 1:
            raise ValueError(f"Point-cloud features of one batch have different sizes {sorted(dims)}.")
        batch = {key: np.stack([r[key] for r in rows]) for key in self.model_input_names}
        return BatchFeature(batch, tensor_type=return_tensors)


def _is_single_scene(value: Any) -> bool:
    if isinstance(value, (str, os.PathLike, dict)):
        return True
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (str, os.PathLike, tuple, dict)):
        return _to_numpy(value[0]).ndim == 2
    return False
