"""Trainable parameters at the paper's size equal DESIGN §1.5 exactly (built on the meta device)."""

import pytest

from modeling_crema.parameter_report import paper_parameter_rows, trainable_parameter_rows
from tiny_models import tiny_crema_model

PAPER_ROWS = {
    "V": 3_961_600,
    "V,A": 9_005_952,
    "V,F": 7_923_200,
    "V,P": 7_923_200,
    "V,T": 7_923_200,
    "V,H": 7_923_200,
    "V,A,F": 21_358_208,
    "V,F,D": 20_275_456,
    "V,T,N": 20_275_456,
    "V,H,D": 20_275_456,
    "V,F,D,N": 28_431_360,
    "V,A,F,D,N": 37_670_016,
}
LETTERS = {"V": "video", "A": "audio", "F": "flow", "D": "depth", "N": "normal", "P": "point_cloud",
           "T": "touch", "H": "thermal"}  # Table 4: T touch map, H thermal heatmap


@pytest.mark.parametrize("row", sorted(PAPER_ROWS))
def test_paper_size_totals(row):
    modalities = [LETTERS[letter] for letter in row.split(",")]
    rows = dict(paper_parameter_rows(modalities))
    assert rows["total trainable"] == PAPER_ROWS[row]


def test_paper_size_components():
    rows = dict(paper_parameter_rows(["video", "audio", "flow", "depth", "normal"]))
    assert rows["MMQA video"] == 3_961_600 and rows["MMQA flow"] == 3_961_600
    assert rows["MMQA audio"] == 5_044_352
    assert rows["fusion (5 modalities)"] == 4 * 2048 * 2048 + 2048
    assert rows["frozen backbone"] > 3_000_000_000


def test_report_matches_requires_grad_on_a_real_model():
    model = tiny_crema_model(["video", "depth", "flow"], fusion=["video", "depth", "flow"])
    rows = dict(trainable_parameter_rows(model))
    assert rows["total trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert rows["MMQA video"] == rows["MMQA depth"] == rows["MMQA flow"]


def test_print_trainable_parameters(capsys):
    model = tiny_crema_model(["video", "depth"], fusion=["video", "depth"])
    model.print_trainable_parameters()
    out = capsys.readouterr().out
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "MMQA depth" in out and f"{total:,}" in out
