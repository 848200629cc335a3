"""Benchmark builders: the official annotation formats (tiny copies in tests/fixtures/benchmarks/) -> one
`datasets.Dataset` schema; missing media skipped or refused; malformed files refused with file and line."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crema_training.benchmark_datasets import (
    BENCHMARKS,
    COLUMNS,
    benchmark_info,
    build_benchmark,
    features,
)
from crema_training.metrics import TABLE_LAYOUTS

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
NO_MEDIA = {"video": None, "audio": None, "flow": None, "depth": None, "normal": None, "thermal": None,
            "touch": None, "point_cloud": None, "point_cloud_voxels": None}


def touch_files(root: Path, *names: str) -> Path:
    """Empty files (or, for names ending in '/', folders holding one frame file): builders only check existence."""
    for name in names:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            (path / "00001.jpg").write_bytes(b"")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    return root


# --------------------------------------------------------------------------------------------- NExT-QA
def test_nextqa_csv_rows_with_video_map(tmp_path):
    root = touch_files(tmp_path / "NExTVideo", "1025/4010069381.mp4", "1025/4882821564.mp4", "0031/2834146886.mp4",
                       "0031/6329077812.mp4")
    data = build_benchmark("nextqa", FIXTURES / "nextqa" / "val.csv", media_root=root)
    assert len(data) == 4
    assert data[1] == {
        "id": "4882821564_1", "dataset": "nextqa", "prompt_preset": "nextqa", "question_type": "CW",
        "question": "why did the boy pick up one present from the group of them and move to the sofa",
        "situation": "",
        "options": ["share with the girl", "approach lady sitting there", "unwrap it", "playing with toy train",
                    "gesture something"],
        "answer": "unwrap it", "answer_index": 2, "modality_word": "",
        **NO_MEDIA, "video": str(root / "1025" / "4882821564.mp4"),
    }
    assert data["id"] == ["4010069381_6", "4882821564_1", "2834146886_8", "6329077812_7"]
    assert data["question_type"] == ["CH", "CW", "TN", "TP"]
    assert data["answer"] == ["roll the handle", "unwrap it", "smells the black dog", "take napkin"]
    assert data["video"][3] == str(root / "0031" / "6329077812.mp4")


def test_nextqa_sevila_json_type_from_qid_and_frame_folders(tmp_path):
    root = touch_files(tmp_path / "frames", "1025/4010069381/", "1106/5735711594/")
    flow = touch_files(tmp_path / "frames_flow", "1025/4010069381/", "1106/5735711594/")
    data = build_benchmark("nextqa", FIXTURES / "nextqa" / "val_sevila.json", media_root=root, flow_root=flow)
    assert data["id"] == ["4010069381_6", "5735711594_5"]
    assert data["question_type"] == ["CH", "TC"]
    assert data[1]["options"] == ["follow it.", "hopped away.", "wagging.", "ready to run away.", "move his head."]
    assert (data[1]["answer"], data[1]["answer_index"]) == ("hopped away.", 1)
    assert data[1]["question"] == "how did the white dog respond to the brown dog when it attacks from its tail?"
    assert data[1]["video"] == str(root / "1106" / "5735711594")
    assert data[1]["flow"] == str(flow / "1106" / "5735711594")


def test_missing_media_are_skipped_with_count_and_first_path(tmp_path, caplog):
    root = touch_files(tmp_path / "NExTVideo", "1025/4010069381.mp4", "0031/2834146886.mp4")
    with caplog.at_level(logging.WARNING):
        data, report = build_benchmark("nextqa", FIXTURES / "nextqa" / "val.csv", media_root=root,
                                       return_report=True)
    assert data["id"] == ["4010069381_6", "2834146886_8"]
    first = str(root / "1025" / "4882821564.mp4")
    assert (report.rows_read, report.rows_kept, report.skipped_missing_media) == (4, 2, 2)
    assert report.first_missing.startswith(first) and "line 3" in report.first_missing
    assert "skipped 2" in caplog.text and first in caplog.text


def test_missing_media_raise_with_file_and_line_on_request(tmp_path):
    root = touch_files(tmp_path / "NExTVideo", "1025/4010069381.mp4", "1025/4882821564.mp4", "0031/2834146886.mp4")
    with pytest.raises(ValueError) as error:
        build_benchmark("nextqa", FIXTURES / "nextqa" / "val.csv", media_root=root, on_missing="error")
    message = str(error.value)
    assert "val.csv, line 5" in message and str(root / "0031" / "6329077812.mp4") in message


# ------------------------------------------------------------------------------------------ MUSIC-AVQA
def test_music_avqa_placeholders_types_and_anser(tmp_path):
    root = touch_files(tmp_path / "MUSIC-AVQA-videos-Real", "00006835.mp4", "00007108.mp4")
    data = build_benchmark("music_avqa", FIXTURES / "music_avqa" / "avqa-test.json", media_root=root)
    assert data["question"] == [
        "How many musical instruments were heard throughout the video?",
        "Is the cello more rhythmic than the piano?",  # two <Object>s filled in order (the reference: "cello" twice)
        "Where is the first sounding instrument?",
        "Which instrument makes the sound first?",
    ]
    assert data["question_type"] == ["Audio/Counting", "Audio-Visual/Comparative", "Visual/Location",
                                     "Audio-Visual/Temporal"]
    assert data["answer"] == ["two", "no", "left", "acoustic_guitar"]
    assert data["id"] == ["26", "27", "31", "33"]
    assert data[0] == {
        "id": "26", "dataset": "music_avqa", "prompt_preset": "music_avqa", "question_type": "Audio/Counting",
        "question": "How many musical instruments were heard throughout the video?", "situation": "", "options": [],
        "answer": "two", "answer_index": -1, "modality_word": "audio",
        **NO_MEDIA, "video": str(root / "00006835.mp4"), "audio": str(root / "00006835.mp4"),
    }


def test_music_avqa_separate_audio_folder_prefers_audio_files(tmp_path):
    videos = touch_files(tmp_path / "videos", "00006835.mp4", "00007108.mp4")
    audio = touch_files(tmp_path / "audio", "00006835.wav", "00007108.flac")
    data = build_benchmark("music_avqa", FIXTURES / "music_avqa" / "avqa-test.json", media_root=videos,
                           audio_root=audio)
    assert data["audio"] == [str(audio / "00006835.wav")] * 2 + [str(audio / "00007108.flac")] * 2


# ------------------------------------------------------------------------------------------------ SQA3D
def test_sqa3d_situation_question_types_and_point_cloud_sibling_folders(tmp_path):
    root = touch_files(
        tmp_path / "scannet",
        "voxelized_features_sam_nonzero_preprocess/scene0000_00.pt",
        "voxelized_features_sam_nonzero_preprocess/scene0011_00.pt",
        "voxelized_voxels_sam_nonzero_preprocess/scene0000_00.npy",
        "voxelized_voxels_sam_nonzero_preprocess/scene0011_00.npy",
    )
    videos = touch_files(tmp_path / "videos", "scene0000_00.mp4", "scene0011_00/")
    data = build_benchmark("sqa3d", FIXTURES / "sqa3d" / "test.json", media_root=root, video_root=videos)
    assert data["question_type"] == ["What", "Is", "How", "Which", "Other"]
    assert data["answer"] == ["brown", "no", "two", "left", "yes"]  # the first of `answers`
    assert data[2] == {
        "id": "220602000002", "dataset": "sqa3d", "prompt_preset": "sqa3d", "question_type": "How",
        "question": "How many pillows are on the bed?", "situation": "I just put my bag on the table.",
        "options": [], "answer": "two", "answer_index": -1, "modality_word": "3D Model",
        **NO_MEDIA,
        "video": str(videos / "scene0011_00"),
        "point_cloud": str(root / "voxelized_features_sam_nonzero_preprocess" / "scene0011_00.pt"),
        "point_cloud_voxels": str(root / "voxelized_voxels_sam_nonzero_preprocess" / "scene0011_00.npy"),
    }


def test_sqa3d_point_cloud_root_may_be_the_features_folder_or_flat(tmp_path):
    nested = touch_files(tmp_path / "a", "voxelized_features_sam_nonzero_preprocess/scene0000_00.pt",
                         "voxelized_voxels_sam_nonzero_preprocess/scene0000_00.npy",
                         "voxelized_features_sam_nonzero_preprocess/scene0011_00.pt",
                         "voxelized_voxels_sam_nonzero_preprocess/scene0011_00.npy")
    data = build_benchmark("sqa3d", FIXTURES / "sqa3d" / "test.json",
                           point_cloud_root=nested / "voxelized_features_sam_nonzero_preprocess")
    assert data[0]["point_cloud_voxels"] == str(nested / "voxelized_voxels_sam_nonzero_preprocess" / "scene0000_00.npy")
    assert data[0]["video"] is None
    flat = touch_files(tmp_path / "b", "scene0000_00.pt", "scene0000_00.npy", "scene0011_00.pt", "scene0011_00.npy")
    data = build_benchmark("sqa3d", FIXTURES / "sqa3d" / "test.json", point_cloud_root=flat)
    assert (data[4]["point_cloud"], data[4]["point_cloud_voxels"]) == (str(flat / "scene0011_00.pt"),
                                                                      str(flat / "scene0011_00.npy"))


# ------------------------------------------------------------------------------------------ PerceptionTest
def test_perception_test_official_json(tmp_path):
    root = touch_files(tmp_path / "videos", "video_10909.mp4", "video_7826.mp4")
    data = build_benchmark("perception_test", FIXTURES / "perception_test" / "mc_question_valid.json",
                           media_root=root)
    assert data["id"] == ["video_10909_0", "video_10909_1", "video_7826_0"]
    assert data["question_type"] == ["physics", "memory", "semantics"]
    assert data[1] == {
        "id": "video_10909_1", "dataset": "perception_test", "prompt_preset": "perception_test",
        "question_type": "memory", "question": "How many objects were put in the backpack?", "situation": "",
        "options": ["3", "2", "1"], "answer": "3", "answer_index": 0, "modality_word": "",
        **NO_MEDIA, "video": str(root / "video_10909.mp4"),
    }


# ------------------------------------------------------------------------------------------------ VGGSound
def test_vggsound_csv_split_and_clip_names(tmp_path):
    root = touch_files(tmp_path / "clips", "---g-f_I2yQ_000001.mp4", "-0BIyqJj9ZU_000030.mp4")
    data = build_benchmark("vggsound", FIXTURES / "vggsound" / "vggsound.csv", media_root=root, split="test")
    assert data["id"] == ["---g-f_I2yQ_000001", "-0BIyqJj9ZU_000030"]
    assert data["answer"] == ["people marching", "cattle, bovinae cowbell"]
    assert data[1]["video"] == data[1]["audio"] == str(root / "-0BIyqJj9ZU_000030.mp4")
    assert data[1]["question"] == "What is making the sound in the video?"
    assert data[1]["modality_word"] == "audio" and data[1]["question_type"] == "all"
    assert len(build_benchmark("vggsound", FIXTURES / "vggsound" / "vggsound.csv")) == 4  # every split
    assert build_benchmark("vggsound", FIXTURES / "vggsound" / "vggsound.csv", question="Which sound?")["question"][0] \
        == "Which sound?"


# ------------------------------------------------------------------------------------- TouchQA, ThermalQA
def test_touchqa_frames_or_clips_in_the_authors_layout(tmp_path):
    root = touch_files(tmp_path / "touchqa", "video_frames/3001/", "touch_frames/3001/", "clips/3002.mp4",
                       "touch_clips/3002_touch.mp4")
    data = build_benchmark("touchqa", FIXTURES / "touchqa" / "touchqa_val.json", media_root=root)
    assert data[0] == {
        "id": "3001", "dataset": "touchqa", "prompt_preset": "touchqa", "question_type": "all",
        "question": "What material is the person touching?", "situation": "", "options": [], "answer": "rock",
        "answer_index": -1, "modality_word": "touch map",
        **NO_MEDIA, "video": str(root / "video_frames" / "3001"), "touch": str(root / "touch_frames" / "3001"),
    }
    assert (data[1]["video"], data[1]["touch"]) == (str(root / "clips" / "3002.mp4"),
                                                     str(root / "touch_clips" / "3002_touch.mp4"))
    assert data[1]["question"] == "What material is the person touching?"  # the fixed question (none in the file)


def test_thermalqa_label_field_and_clip_names(tmp_path):
    root = touch_files(tmp_path / "thermalqa", "clips/501.mp4", "thermal_clips/501_touch.mp4",
                       "video_frames/502/", "thermal_frames/502/")
    data = build_benchmark("thermalqa", FIXTURES / "thermalqa" / "thermalqa_val.json", media_root=root)
    assert data["answer"] == ["sit down", "open fridge"]
    assert data["question"] == ["What action might have occurred before this video?"] * 2
    assert data["modality_word"] == ["thermal heatmap"] * 2
    assert data["thermal"] == [str(root / "thermal_clips" / "501_touch.mp4"), str(root / "thermal_frames" / "502")]


# ------------------------------------------------------------------------------------------ shared schema
ALL_FIXTURES = {
    "nextqa": "nextqa/val.csv", "music_avqa": "music_avqa/avqa-test.json", "sqa3d": "sqa3d/test.json",
    "perception_test": "perception_test/mc_question_valid.json", "vggsound": "vggsound/vggsound.csv",
    "touchqa": "touchqa/touchqa_val.json", "thermalqa": "thermalqa/thermalqa_val.json",
}


def test_every_builder_gives_the_same_schema_and_it_round_trips(tmp_path):
    from datasets import load_from_disk

    assert set(ALL_FIXTURES) == set(BENCHMARKS)
    expected = [
        "id", "dataset", "prompt_preset", "question_type", "question", "situation", "options", "answer",
        "answer_index", "modality_word", "video", "audio", "flow", "depth", "normal", "thermal", "touch",
        "point_cloud", "point_cloud_voxels",
    ]
    for name, path in ALL_FIXTURES.items():
        data = build_benchmark(name, FIXTURES / path)
        assert data.column_names == expected, name
        assert data.features == features(), name
        assert set(data["dataset"]) == set(data["prompt_preset"]) == {name}
    data.save_to_disk(tmp_path / "saved")
    assert load_from_disk(tmp_path / "saved")[:] == data[:]
    assert list(COLUMNS) == expected


def test_prompt_preset_data_per_benchmark():
    """DESIGN §3 / paper Table 11: multiple choice for NExT-QA and PerceptionTest, else the fixed modality word."""
    words = {name: build_benchmark(name, FIXTURES / path)[0]["modality_word"] for name, path in ALL_FIXTURES.items()}
    assert words == {"nextqa": "", "perception_test": "", "music_avqa": "audio", "vggsound": "audio",
                     "sqa3d": "3D Model", "touchqa": "touch map", "thermalqa": "thermal heatmap"}
    assert BENCHMARKS["sqa3d"].max_new_tokens == 40 and BENCHMARKS["music_avqa"].max_new_tokens == 10


def test_rows_make_the_papers_prompts_with_the_processor(tokenizer):
    from crema_processing import CremaProcessor

    processor = CremaProcessor(tokenizer)
    row = build_benchmark("sqa3d", FIXTURES / "sqa3d" / "test.json")[0]
    prompt = processor.build_prompt(row["question"], row["options"] or None, row["modality_word"], row["situation"])
    assert prompt == ("I am sitting on the bed facing the desk. Question: What color is the chair to my left? Based "
                      "on the frames and 3D Model information, answer the question using a single word or phrase.")
    row = build_benchmark("music_avqa", FIXTURES / "music_avqa" / "avqa-test.json")[2]
    prompt = processor.build_prompt(row["question"], row["options"] or None, row["modality_word"], row["situation"])
    assert prompt == ("Question: Where is the first sounding instrument? Based on the frames and audio information, "
                      "answer the question using a single word or phrase.")
    row = build_benchmark("perception_test", FIXTURES / "perception_test" / "mc_question_valid.json")[2]
    prompt = processor.build_prompt(row["question"], row["options"] or None, row["modality_word"], row["situation"])
    assert prompt == ("Question: What is the person going to do next? Option A: close the lid Option B: pour water "
                      "Option C: leave the room Considering the information presented in the frame, select the "
                      "correct answer from the options.")


def test_table_layouts_cover_every_question_type():
    for name, info in BENCHMARKS.items():
        layout = TABLE_LAYOUTS[name]
        in_columns = {t for group in layout.groups for column in group.columns for t in column.question_types}
        assert set(info.question_types) - {"all"} == in_columns, name


def test_benchmark_names_and_aliases():
    assert benchmark_info("NExT-QA").name == "nextqa" and benchmark_info("MUSIC-AVQA").name == "music_avqa"
    with pytest.raises(ValueError, match="unknown benchmark 'kinetics'; known: nextqa, music_avqa, sqa3d"):
        benchmark_info("kinetics")
    with pytest.raises(ValueError, match="nextqa does not take question"):
        build_benchmark("nextqa", FIXTURES / "nextqa" / "val.csv", question="why?")


def test_importing_the_builders_imports_no_heavy_package():
    code = ("import sys, crema_training.benchmark_datasets, crema_training.metrics; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------ malformed files
def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


NEXTQA_HEADER = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("1,2,3,4,why,0,1,CW,a,b,c,d,e\n1,2,3,4,how,0,2,XX,a,b,c,d,e\n", 3, "unknown question type 'XX'"),
        ("1,2,3,4,why,7,1,CW,a,b,c,d,e\n", 2, "answer index 7 is out of range for 5 options"),
        ("1,2,3,4,why,zero,1,CW,a,b,c,d,e\n", 2, "answer (the correct option's index) must be a whole number"),
        ("1,2,3,4,why,0,1,CW,a,b,c,d\n", 2, "expected 13 fields"),
        ("1,2,3,4,why,0,1,CW,a,b,c,d,e\n1,2,3,4,why,0,1,CW,a,b,c,d,e\n", 3, "duplicate id '1_1' (also on line 2)"),
    ],
)
def test_nextqa_malformed_csv_names_file_and_line(tmp_path, body, line, message):
    path = write(tmp_path, "val.csv", NEXTQA_HEADER + body)
    with pytest.raises(ValueError) as error:
        build_benchmark("nextqa", path)
    assert str(error.value).startswith(f"{path}, line {line}: ")
    assert message in str(error.value)


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path, "avqa.json", '[\n  {"video_id": "1", "question_id": 1,\n   "type": ["Audio", "Counting"]\n'
                                        '   "anser": "two"}\n]\n')
    with pytest.raises(ValueError, match=rf"^{path}, line 4: invalid JSON \(Expecting ',' delimiter"):
        build_benchmark("music_avqa", path)


def record_line_error(tmp_path, name, records, **kwargs):
    """Build from a JSON list written one record per line (record k on line k + 2); return the error message."""
    path = write(tmp_path, "annotations.json", "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    with pytest.raises(ValueError) as error:
        build_benchmark(name, path, **kwargs)
    return path, str(error.value)


AVQA_OK = {"video_id": "1", "question_id": 1, "type": '["Audio", "Counting"]', "question_content": "How many?",
           "templ_values": "[]", "anser": "two"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"type": '["Audio", "Dancing"]'}, "unknown question type 'Audio/Dancing'"),
        ({"type": "Audio"}, "type is not a list: 'Audio'"),
        ({"question_content": "Is the <Object> louder than the <Object>?", "templ_values": '["piano"]'},
         "has 2 placeholder(s) but templ_values has 1 value(s)"),
        ({"anser": None}, "missing field anser"),
    ],
)
def test_music_avqa_malformed_rows_name_file_and_line(tmp_path, bad, message):
    second = {**AVQA_OK, "question_id": 2, **bad}
    path, error = record_line_error(tmp_path, "music_avqa", [AVQA_OK, second])
    assert error.startswith(f"{path}, line 3: ") and message in error


def test_other_malformed_rows_name_file_and_line(tmp_path):
    ok = {"scene_id": "s", "situation": "x", "question": "What?", "answers": ["a"], "question_id": 1}
    path, error = record_line_error(tmp_path, "sqa3d", [ok, {**ok, "question_id": 2, "answers": []}])
    assert error.startswith(f"{path}, line 3: ") and "answers must be a non-empty list" in error
    path, error = record_line_error(tmp_path, "touchqa", [{"question_id": 1, "answer": "rock"}, {"question_id": 2}])
    assert error.startswith(f"{path}, line 3: ") and "missing field answer" in error
    path = write(tmp_path, "pt.json", '{\n "video_1": {"mc_question": [\n  {"id": 0, "question": "q", "options": '
                                      '["a", "b"], "area": "physics"}]}\n}\n')
    with pytest.raises(ValueError, match=rf"^{path}, line 2: .*no answer_id \(the test split hides the answers"):
        build_benchmark("perception_test", path)
    path = write(tmp_path, "pt2.json", '{"video_1": {"mc_question": [{"id": 0, "question": "q", "options": ["a"], '
                                       '"answer_id": 0, "area": "chemistry"}]}}')
    with pytest.raises(ValueError, match=rf"^{path}, line 1: unknown question type 'chemistry'"):
        build_benchmark("perception_test", path)
    path = write(tmp_path, "vgg.csv", "abc,1,dog barking,test\nabd,one,cat,test\n")
    with pytest.raises(ValueError, match=rf"^{path}, line 2: start_seconds must be a whole number"):
        build_benchmark("vggsound", path)


def test_missing_annotation_file_and_bad_on_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such annotation file"):
        build_benchmark("nextqa", tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="on_missing must be one of"):
        build_benchmark("nextqa", FIXTURES / "nextqa" / "val.csv", on_missing="ignore")
    assert os.path.exists(FIXTURES / "nextqa" / "val.csv")


def test_sqa3d_question_types_follow_the_references_rule():
    """The reference (its `get_qclass`, behind the paper's Table 2): the first of What, How, Can, Is, Which that
    occurs anywhere in the question, case-sensitive; else Other."""
    from crema_training.benchmark_datasets.sqa3d import question_type

    assert question_type("Is there a lamp? How many?") == "How"
    assert question_type("Facing the bed, What is on my left?") == "What"
    assert question_type("Which chair Is closer?") == "Is"
    assert question_type("Can I reach it?") == "Can"
    assert question_type("what is on my left?") == "Other"
