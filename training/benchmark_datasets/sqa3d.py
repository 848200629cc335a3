"""SQA3D (open-ended 3D situated QA; paper Table 2), in the ScanQA / 3D-LLM form the reference reads.

Annotation file: a list of `{scene_id, situation, question, answers, question_id}` (`answers` a list; the first
one is the answer, as in the reference).

Question types, as the reference assigns them (its `get_qclass`, from which the paper's Table 2 was computed):
the first of What, How, Can, Is, Which that occurs in the question (case-sensitive), else Other.

Media:
- point clouds under `point_cloud_root` (default `media_root`): the 3D-LLM layout
  `voxelized_features_sam_nonzero_preprocess/{scene}.pt` ([N, 1408] features) with the voxels in the sibling
  folder `voxelized_voxels_sam_nonzero_preprocess/{scene}.npy` ([N, 3]); `point_cloud_root` may also be the
  features folder itself, or a flat folder holding `{scene}.pt` and `{scene}.npy` side by side;
- the scene video `video_root/{scene}.mp4` or a folder of frames `video_root/{scene}/` (default `media_root`);
- precomputed depth / normal frames under `depth_root` / `normal_root`, same names.
"""

from __future__ import annotations

import os

from .schema import (
    AnnotatedRow, AnnotationError, Folder, MediaFolder, builder, find_media, make_row, media_folders, question_list,
    read_records, require_fields, resolve_roots,
)

NAME = "sqa3d"
TITLE = "SQA3D"
MODALITY_WORD = "3D Model"
#: In the order the reference tests them.
QUESTION_TYPES = ("What", "How", "Can", "Is", "Which", "Other")
ROOTS = ("video", "depth", "normal", "point_cloud")
FEATURES_FOLDER = "voxelized_features_sam_nonzero_preprocess"
VOXELS_FOLDER = "voxelized_voxels_sam_nonzero_preprocess"
FEATURE_EXTENSIONS = (".pt", ".pth", ".safetensors", ".npz", ".npy")


def question_type(question: str) -> str:
    """The reference's question class: the first of What, How, Can, Is, Which found in the question."""
    return next((name for name in QUESTION_TYPES[:-1] if name in question), "Other")


def point_cloud_folders(root: str) -> tuple[MediaFolder, MediaFolder]:
    """(features, voxels) folders of a point-cloud root in any of the accepted layouts."""
    if os.path.basename(root.rstrip(os.sep)) == FEATURES_FOLDER:
        features, voxels = root, os.path.join(os.path.dirname(root.rstrip(os.sep)), VOXELS_FOLDER)
    elif os.path.isdir(os.path.join(root, FEATURES_FOLDER)):
        features, voxels = os.path.join(root, FEATURES_FOLDER), os.path.join(root, VOXELS_FOLDER)
    else:
        return (MediaFolder(root, FEATURE_EXTENSIONS[:-1], frames_folder=False),
                MediaFolder(root, (".npy",), frames_folder=False))
    return (MediaFolder(features, FEATURE_EXTENSIONS, frames_folder=False),
            MediaFolder(voxels, (".npy",), frames_folder=False))


def read(
    annotation_file: str | os.PathLike, media_root: Folder = None, *, video_root: Folder = None,
    depth_root: Folder = None, normal_root: Folder = None, point_cloud_root: Folder = None,
) -> list[AnnotatedRow]:
    """The schema rows of an SQA3D annotation file, media paths not yet checked."""
    path = os.fspath(annotation_file)
    roots = resolve_roots(
        media_root,
        {"video": video_root, "depth": depth_root, "normal": normal_root, "point_cloud": point_cloud_root},
        {"video": "", "depth": None, "normal": None, "point_cloud": ""},
    )
    folders = media_folders({m: roots[m] for m in ("video", "depth", "normal")})
    clouds = point_cloud_folders(roots["point_cloud"]) if roots["point_cloud"] is not None else None
    rows = []
    for line, record in question_list(read_records(path), path):
        require_fields(record, ("scene_id", "question", "answers", "question_id"), path, line)
        answers = record["answers"]
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise AnnotationError(path, line, f"answers must be a non-empty list of strings, got {answers!r}")
        scene = str(record["scene_id"]).strip()
        media = find_media(folders, scene)
        if clouds is not None:
            media["point_cloud"], media["point_cloud_voxels"] = clouds[0].find(scene), clouds[1].find(scene)
        question = str(record["question"]).strip()
        rows.append(AnnotatedRow(line, make_row(
            id=str(record["question_id"]).strip(), dataset=NAME, prompt_preset=NAME,
            question_type=question_type(question), question=question,
            situation=str(record.get("situation") or "").strip(), answer=answers[0].strip(),
            modality_word=MODALITY_WORD, **media,
        )))
    return rows


build = builder(read, NAME, """A `datasets.Dataset` in the shared schema. `media_root`: the folder holding the
point-cloud feature folders and the scene videos; `point_cloud_root`/`video_root`/`depth_root`/`normal_root`
override it.""")
