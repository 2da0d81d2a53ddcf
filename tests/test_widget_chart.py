"""The cell widget's metric curve: which metric it draws and that the drawn points are the reported ones."""

from __future__ import annotations

import re

from nothing.magics.widget import main_metric, metric_svg


def test_main_metric_is_the_first_rule_then_loss_then_the_first_reported():
    assert main_metric({"metrics": [{"name": "acc", "regex": "acc=(.*)"}, {"name": "loss", "regex": "x"}],
                        "metric_summary": {"loss": {}}}) == "acc"
    assert main_metric({"metrics": None, "metric_summary": {"acc": {}, "loss": {}}}) == "loss"
    assert main_metric({"metric_summary": {"f1": {}, "acc": {}}}) == "f1"
    assert main_metric({"metric_summary": {}}) is None


def test_svg_path_holds_exactly_the_finite_points_in_step_order():
    points = [[0, 1.0, 2.5], [1, 2.0, "NaN"], [2, 3.0, 1.25], [3, 4.0, "Infinity"], [4, 5.0, 0.5]]
    svg = metric_svg("loss", points)
    steps = re.search(r"data-steps='([^']*)'", svg).group(1)
    values = re.search(r"data-values='([^']*)'", svg).group(1)
    assert steps == "0,2,4"
    assert [float(v) for v in values.split(",")] == [2.5, 1.25, 0.5]
    moves = re.search(r" d='([^']*)'", svg).group(1)
    assert moves.count("L") == 2 and moves.startswith("M")
    assert "latest 0.5 at step 4" in svg


def test_svg_escapes_the_name_and_says_when_nothing_is_finite():
    svg = metric_svg("<b>", [[0, 1.0, "NaN"]])
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert "no finite points yet" in svg
