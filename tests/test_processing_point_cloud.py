"""Point-cloud features: loading `.pt` / `.npy`, fixed-size sampling/padding with an attention mask, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crema_processing import CremaPointCloudFeatureExtractor, load_point_cloud


def scene(points: int, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((points, dim)).astype(np.float32)
    features[:, 0] = np.arange(points)  # row id, to check features and coordinates stay paired
    coordinates = rng.integers(0, 256, size=(points, 3))
    coordinates[:, 0] = np.arange(points) % 256
    return features, coordinates


def test_load_pt_features_with_npy_voxels_beside_them(tmp_path):
    features, coordinates = scene(12)
    torch.save(torch.from_numpy(features), tmp_path / "scene0000_00.pt")
    np.save(tmp_path / "scene0000_00.npy", coordinates)
    loaded_features, loaded_coordinates = load_point_cloud(tmp_path / "scene0000_00.pt")
    np.testing.assert_array_equal(loaded_features, features)
    np.testing.assert_array_equal(loaded_coordinates, coordinates)
    bundle = {"features": torch.from_numpy(features), "coordinates": torch.from_numpy(coordinates)}
    torch.save(bundle, tmp_path / "b.pt")
    both = load_point_cloud(tmp_path / "b.pt")
    np.testing.assert_array_equal(both[1], coordinates)
    np.save(tmp_path / "feats.npy", features)
    np.save(tmp_path / "voxels.npy", coordinates)
    np.testing.assert_array_equal(load_point_cloud(tmp_path / "feats.npy", tmp_path / "voxels.npy")[0], features)
    with pytest.raises(FileNotFoundError, match="No voxel coordinates for .*lonely.pt"):
        torch.save(torch.from_numpy(features), tmp_path / "lonely.pt")
        load_point_cloud(tmp_path / "lonely.pt")


def test_fewer_points_are_zero_padded_and_masked(tmp_path):
    features, coordinates = scene(10)
    out = CremaPointCloudFeatureExtractor(num_points=16)((features, coordinates), return_tensors="pt")
    assert out["features"].shape == (1, 16, 8) and out["features"].dtype == torch.float32
    assert out["coordinates"].shape == (1, 16, 3) and out["coordinates"].dtype == torch.long
    assert out["attention_mask"].tolist() == [[1] * 10 + [0] * 6]
    torch.testing.assert_close(out["features"][0, :10], torch.from_numpy(features))
    assert out["features"][0, 10:].abs().sum() == 0 and out["coordinates"][0, 10:].abs().sum() == 0


def test_more_points_are_sampled_deterministically_in_eval_and_seeded_in_training():
    features, coordinates = scene(50)
    extractor = CremaPointCloudFeatureExtractor(num_points=20)
    first = extractor((features, coordinates))
    again = extractor((features, coordinates))
    np.testing.assert_array_equal(first["features"], again["features"])
    assert first["attention_mask"].sum() == 20
    rows = first["features"][0, :, 0].astype(int)
    assert len(set(rows)) == 20 and list(rows) == sorted(rows)
    np.testing.assert_array_equal(first["coordinates"][0, :, 0], rows % 256)  # pairs kept together
    a = extractor((features, coordinates), training=True, generator=1)["features"]
    b = extractor((features, coordinates), training=True, generator=1)["features"]
    c = extractor((features, coordinates), training=True, generator=2)["features"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batch_of_scenes_and_paths(tmp_path):
    f1, c1 = scene(5)
    f2, c2 = scene(30, seed=1)
    np.save(tmp_path / "s1.npy", c1)
    torch.save(torch.from_numpy(f1), tmp_path / "s1.pt")
    out = CremaPointCloudFeatureExtractor(num_points=20)([str(tmp_path / "s1.pt"), {"features": f2, "coords": c2}])
    assert out["features"].shape == (2, 20, 8)
    assert out["attention_mask"].sum(axis=1).tolist() == [5, 20]


def test_bad_point_clouds():
    features, coordinates = scene(10)
    extractor = CremaPointCloudFeatureExtractor(num_points=16)
    broken = features.copy()
    broken[3, 2] = np.nan
    with pytest.raises(ValueError, match="point_cloud.*NaN"):
        extractor((broken, coordinates))
    with pytest.raises(ValueError, match=r"outside \[0, 256\)"):
        extractor((features, coordinates + 300))
    with pytest.raises(ValueError, match="10 feature rows but 9 coordinate rows"):
        extractor((features, coordinates[:9]))
    with pytest.raises(ValueError, match="not integers"):
        extractor((features, coordinates + 0.5))
    with pytest.raises(ValueError, match="zero points"):
        extractor((features[:0], coordinates[:0]))
    with pytest.raises(ValueError, match="expected 1408"):
        CremaPointCloudFeatureExtractor(feature_size=1408)((features, coordinates))


def test_raw_xyz_can_be_voxelised():
    features, _ = scene(10)
    xyz = np.random.default_rng(0).uniform(-3.0, 5.0, size=(10, 3))
    out = CremaPointCloudFeatureExtractor(num_points=10, rescale_coordinates=True)((features, xyz))
    coordinates = out["coordinates"][0]
    assert coordinates.min() == 0 and coordinates.max() == 255


def test_save_and_load(tmp_path):
    extractor = CremaPointCloudFeatureExtractor(num_points=64, feature_size=8, eval_seed=3)
    extractor.save_pretrained(tmp_path)
    loaded = CremaPointCloudFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict() and loaded.eval_seed == 3
