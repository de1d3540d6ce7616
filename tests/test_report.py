"""The operating-points table and its JSON file (seqvae.report), on constructed records."""

from __future__ import annotations

import json

import pytest

from seqvae.errors import SeqVAEError
from seqvae.report import edits_table, operating_points_table, plot_operating_points, record_operating_point


def _record(row: str, **changes) -> dict:
    record = {
        "row": row, "ppl_iw": 5.0, "ppl_iw_fitted": 4.5, "kl": 6.0, "mi": 4.0, "active_units": 8, "bleu": 20.0,
        "prior_lm_forward_ppl": 4.2, "prior_lm_reverse_ppl": 30.0, "prior_self_bleu": 60.0,
        "fitted_prior_lm_forward_ppl": 4.0, "fitted_prior_lm_reverse_ppl": 20.0, "fitted_prior_self_bleu": 55.0,
        "homotopy_endpoint_bleu": 21.0, "homotopy_path_lm_forward_ppl": 5.5, "homotopy_endpoint_lm_forward_ppl": 5.0,
    }
    return {**record, **changes}


def test_the_table_has_a_line_per_row_and_prior_and_the_edit_of_the_best_scale():
    edit = {"0": {"reached": 0.0, "others_kept": 1.0, "bleu_to_input": 70.0, "transfer_rate": 0.0},
            "1": {"reached": 0.8, "others_kept": 0.95, "bleu_to_input": 30.0, "transfer_rate": 0.7},
            "2": {"reached": 0.99, "others_kept": 0.9, "bleu_to_input": 12.0, "transfer_rate": 0.85},
            "perfect": {"bleu_to_input": 47.7}}
    lines = operating_points_table([_record("vae"), _record("ae", edit=edit)]).splitlines()
    assert len(lines) == 2 + 4 and lines[2].startswith("| vae | N(0, I) | 5.00 | 6.00 |")
    assert lines[3].startswith("| vae | fitted | 4.50 |") and lines[3].endswith("| - | - | - |")
    # path / end = 5.5 / 5.0; the edit shown is scale 2, whose transfer rate is the highest
    assert lines[5].endswith("| 21.0 | 1.10 | 0.990 (x2) | 0.900 | 12.0 |")
    lines = operating_points_table([_record("vae", lm_real_ppl=4.6, real_self_bleu=36.24)]).splitlines()
    assert lines[-1] == "Real test sentences: the judge's perplexity 4.60, self-BLEU 36.2 (as many sentences as the prior samples)."


def test_a_row_recorded_again_replaces_its_record_and_keeps_the_others_in_order(tmp_path):
    path = tmp_path / "results" / "points.json"
    order = ["vae", "mdr", "ae"]
    assert [r["row"] for r in record_operating_point(path, _record("ae"), order)] == ["ae"]
    record_operating_point(path, _record("vae"), order)
    records = record_operating_point(path, _record("ae", bleu=70.0), order)
    assert [r["row"] for r in records] == ["vae", "ae"] and records[1]["bleu"] == 70.0
    assert json.loads(path.read_text()) == records
    path.write_text("{not json")
    with pytest.raises(SeqVAEError, match="points.json: not a JSON list of operating points"):
        record_operating_point(path, _record("vae"), order)
    assert path.read_text() == "{not json"  # nothing overwritten


def test_the_operating_points_figure_is_a_png_and_needs_a_judged_row(tmp_path):
    path = plot_operating_points([_record("vae"), _record("ae", kl=250.0, lm_real_ppl=4.6)], tmp_path / "points.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unjudged = {key: value for key, value in _record("vae").items() if "_lm_" not in key}
    with pytest.raises(SeqVAEError, match="no row was judged"):
        plot_operating_points([unjudged], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_the_edits_table_lists_every_scale_under_its_ceiling():
    edit = {"0": {"reached": 0.0, "others_kept": 1.0, "bleu_to_input": 70.0, "transfer_rate": 0.0, "lm_forward_ppl": 4.8},
            "1.5": {"reached": 0.9, "others_kept": 0.92, "bleu_to_input": 25.0, "transfer_rate": 0.8, "lm_forward_ppl": 5.1},
            "perfect": {"bleu_to_input": 47.7}, "inputs": {"lm_forward_ppl": 4.6}}
    lines = edits_table([_record("vae"), _record("ae", edit=edit)]).splitlines()
    assert lines[0] == "perfect edits: BLEU to the input 47.7; the inputs' forward PPL 4.60."
    assert lines[4:] == ["| ae | 0 | 0.000 | 1.000 | 0.000 | 70.0 | 4.80 |", "| ae | 1.5 | 0.900 | 0.920 | 0.800 | 25.0 | 5.10 |"]
    assert edits_table([_record("vae")]) == ""
