"""`ibpo-fast plot`: what each metrics file can show, and a budget plot whose lines are told apart."""
import json
import math

import pytest

from ibpo_fast.plot import budget_series, plot


def _record(step, share, density):
    return {"step": step, "q": 0.5, "loss": 1.0 / (step + 1), "sampled_extended_share": 0.4,
            "selected_extended_share": share, "selected_extended_density": density,
            "extended_share_by_level": {"1": 0.0, "3": 0.5}, "accuracy_by_level": {"1": 1.0, "3": 0.5}}


def test_the_density_is_drawn_only_where_it_differs():
    series = budget_series([_record(0, 0.25, 0.25), _record(1, 0.25, 0.5), _record(2, 0.0, 0.0)])
    label = "extended / selected (density), at the 1 steps where it differs"
    assert math.isnan(series[label][0]) and series[label][1] == 0.5 and math.isnan(series[label][2])
    assert series["extended share, selected / (m·P)"] == [0.25, 0.25, 0.0]
    same = budget_series([_record(0, 0.25, 0.25)])
    assert "extended / selected (density): equal to selected / (m·P) at every step" in same


def test_warmup_metrics_plot_their_loss(tmp_path):
    warmup = tmp_path / "warmup.jsonl"
    warmup.write_text("".join(json.dumps({"step": s, "loss": 2.0 - s, "mode": "warmup"}) + "\n" for s in range(3)))
    assert plot(warmup, tmp_path) == [tmp_path / "warmup_loss.png"]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(_record(s, 0.25, 0.25)) + "\n" for s in range(3)))
    assert [p.name for p in plot(metrics, tmp_path)] == ["metrics_loss.png", "budget_adherence.png",
                                                           "allocation_by_level.png"]


def test_a_file_without_figures_is_refused(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"step": 0}\n')
    with pytest.raises(ValueError, match="has no loss and no budget figures"):
        plot(tmp_path / "m.jsonl", tmp_path)
