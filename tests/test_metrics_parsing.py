"""How metrics are read out of a run's log and report file: the rules, the defaults and the bounds."""

from __future__ import annotations

import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nothing.scheduler.metrics import (
    MAX_METRIC_NAMES, Reader, RuleError, best_of, parse_rules, rules_from_json, rules_to_json, summarize,
)
from nothing.scheduler.tracker import read_new


def values(points):
    return [(p.name, p.step, p.value) for p in points]


def test_the_default_reads_name_value_pairs_and_takes_the_step_from_the_line():
    reader = Reader()
    points = reader.log_lines([b"step=7 loss=0.25, acc=9.5e-1 lr=1e-3", b"epoch 2 loss=0.2 done",
                               b"no metrics here", b"url=http://x ratio=abc n=3"], at=1.0)
    assert values(points) == [("loss", 7, 0.25), ("acc", 7, 0.95), ("lr", 7, 0.001), ("loss", 8, 0.2),
                              ("n", 0, 3.0)]


def test_named_rules_take_the_first_group_or_the_group_called_value():
    rules = parse_rules([{"name": "val_acc", "regex": r"val acc (\d+\.\d+)"},
                         {"name": "loss", "regex": r"(?P<epoch>\d+): loss (?P<value>[0-9.]+)"}, "lr"])
    points = Reader(rules).log_lines([b"val acc 0.91", b"3: loss 0.5", b"lr: 0.01", b"lr=0.02"], at=0.0)
    assert values(points) == [("val_acc", 0, 0.91), ("loss", 0, 0.5), ("lr", 0, 0.01), ("lr", 1, 0.02)]
    assert rules_from_json(rules_to_json(rules)) == rules


@pytest.mark.parametrize("raw, message", [
    ([{"name": "x", "regex": "(a"}], "does not compile"),
    ([{"name": "x", "regex": r"(a)\1"}], "does not compile"),
    ([{"name": "x", "regex": "(?=a)(a)"}], "does not compile"),
    ([{"name": "x", "regex": "a+"}], "needs a group"),
    ([{"name": "x"}, {"name": "x"}], "named twice"),
    ([{"name": "1x"}], "must start with a letter"),
    ([{"name": "x", "goal": "up"}], "maximize or minimize"),
    ([{"name": "x", "regex": "(a)" * 300}], "at most 500"),
    ("loss", "must be a list"),
    ([{"name": f"m{i}"} for i in range(51)], "at most 50"),
])
def test_bad_rules_are_refused_with_the_reason(raw, message):
    with pytest.raises(RuleError, match=message):
        parse_rules(raw)


def test_a_pattern_that_backtracks_in_python_matches_in_linear_time():
    rules = parse_rules([{"name": "x", "regex": r"^(a+)+$"}])
    started = time.process_time()
    assert Reader(rules).log_lines([b"a" * 60000 + b"!"], at=0.0) == []
    assert time.process_time() - started < 1.0  # Python's re takes minutes on this line


def test_long_lines_junk_and_too_many_names_are_bounded():
    reader = Reader()
    assert reader.log_lines([b"loss=1 " + b"x" * 70000], at=0.0) == []  # over MAX_LINE_BYTES
    line = " ".join(f"m{i}=1" for i in range(MAX_METRIC_NAMES + 50)).encode()
    assert len(reader.log_lines([line], at=0.0)) == MAX_METRIC_NAMES
    assert reader.dropped_names == 50
    assert values(reader.log_lines([b"m0=2 newname=3"], at=0.0)) == [("m0", 1, 2.0)]


def test_report_lines_keep_nan_and_infinity_and_skip_junk():
    lines = [json.dumps({"step": 3, "at": 5.0, "metrics": {"loss": 0.5, "bad": "NaN", "up": "Infinity"}}).encode(),
             b"{not json", b"[1, 2]", json.dumps({"step": True, "metrics": {"x": 1, "flag": True}}).encode(),
             json.dumps({"step": 4, "checkpoint": "epoch-4.pt"}).encode(),
             json.dumps([{"step": 5, "metrics": {"loss": 0.25}}, {"step": 6, "metrics": {"loss": 0.125}}]).encode()]
    points, checkpoints = Reader().report_lines(lines)
    assert [(p.name, p.step, p.at) for p in points] == [("loss", 3, 5.0), ("bad", 3, 5.0), ("up", 3, 5.0),
                                                       ("x", 0, 0.0), ("loss", 5, 0.0), ("loss", 6, 0.0)]
    assert math.isnan(points[1].value) and points[2].value == math.inf
    assert checkpoints == [("epoch-4.pt", 4, 0.0)]


def test_the_summary_keeps_latest_min_max_and_count_and_nan_is_never_an_extreme():
    points = Reader().log_lines([b"loss=3", b"loss=nan", b"loss=1", b"loss=2", b"acc=inf"], at=0.0)
    summary = summarize(None, points)
    assert summary == {"loss": {"latest": 2.0, "step": 3, "min": 1.0, "max": 3.0, "count": 4},
                       "acc": {"latest": "Infinity", "step": 0, "min": "Infinity", "max": "Infinity", "count": 1}}
    assert best_of(summary, "loss") == 1.0 and best_of(summary, "acc") == "Infinity"
    assert best_of(summary, "loss", parse_rules([{"name": "loss", "goal": "maximize"}])) == 3.0


def test_files_are_read_in_whole_lines_never_through_a_link(tmp_path):
    log = tmp_path / "output.log"
    log.write_bytes(b"a=1\nb=2\npartial")
    lines, offset = read_new(str(log), 0, 1024, final=False)
    assert lines == [b"a=1", b"b=2", b""] and offset == 8
    assert read_new(str(log), offset, 1024, final=True) == ([b"partial"], 15)
    link = tmp_path / "link.log"
    link.symlink_to(log)
    assert read_new(str(link), 0, 1024, final=True) == ([], 0)
    log.write_bytes(b"x=1\n")  # truncated by the run: read on from its new end
    assert read_new(str(log), 15, 1024, final=False) == ([], 4)


def test_a_final_read_past_the_limit_still_stops_at_whole_lines(tmp_path):
    log = tmp_path / "output.log"
    log.write_bytes(b"a=1\nbb=22\nccc=333")
    assert read_new(str(log), 0, 6, final=True) == ([b"a=1", b""], 4)  # more follows: not the end yet
    assert read_new(str(log), 4, 6, final=True) == ([b"bb=22", b""], 10)
    assert read_new(str(log), 10, 7, final=True) == ([b"ccc=333"], 17)  # the end: the last line counts


def _reference_default(lines):
    """The default reading done the plain way: each line decoded, then the text patterns."""
    from nothing.scheduler import metrics

    out, steps = [], {}
    for raw in lines:
        if len(raw) > metrics.MAX_LINE_BYTES or b"=" not in raw:
            continue
        line = raw.decode("utf-8", "replace")
        m = metrics._STEP.search(line)
        step = int(m.group(1)) if m else None
        for name, text in metrics.DEFAULT_PATTERN.findall(line):
            if name in ("step", "global_step"):
                continue
            s = steps.get(name, 0) if step is None else step
            steps[name] = s + 1
            out.append((name, s, float(text)))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab_step=:.,;)( \t\x1c\x1d\x1f\x0b01234567eE+-nainfé\u00a0\u2003", max_size=40),
                max_size=6))
def test_ascii_lines_read_as_bytes_give_exactly_what_the_text_patterns_give(texts):
    lines = [t.encode() for t in texts]
    got = [(p.name, p.step, p.value) for p in Reader().log_lines(lines, at=0.0)]
    want = _reference_default(lines)
    assert len(got) == len(want)
    for (n1, s1, v1), (n2, s2, v2) in zip(got, want):
        assert (n1, s1) == (n2, s2) and (v1 == v2 or (math.isnan(v1) and math.isnan(v2)))


def test_separators_and_unicode_spaces_count_as_spaces_in_ascii_and_other_lines_alike():
    lines = [b"step=3\x1closs=0.5\x1f", "step=4\u2003loss=0.25\u00a0acc=1".encode()]
    assert values(Reader().log_lines(lines, at=0.0)) == [("loss", 3, 0.5), ("loss", 4, 0.25), ("acc", 4, 1.0)]


def test_a_report_whose_time_is_too_large_for_a_float_still_counts_at_time_zero():
    lines = [b'{"step": 1, "at": 1' + b"0" * 400 + b', "metrics": {"loss": 0.5, "big": 1' + b"0" * 400 + b'}}',
             b'{"step": 2, "at": 7, "metrics": {"loss": 0.25}}']
    points, _ = Reader().report_lines(lines)
    assert [(p.name, p.step, p.at, p.value) for p in points] == [("loss", 1, 0.0, 0.5), ("loss", 2, 7.0, 0.25)]


def test_report_lines_read_arrays_with_the_time_in_milliseconds_and_skip_malformed_ones():
    lines = [b'[[3, 5000, {"loss": 0.5, "up": Infinity}], [4, 6000, null, "epoch-4.pt"], [5, -1, {"loss": NaN}]]',
             b'[[1, 2], [true, 7000, {"x": 1}], [6, 7000, {"loss": 1}, "a", "b"], [7, 1e3, {"loss": 2}]]']
    points, checkpoints = Reader().report_lines(lines)
    assert [(p.name, p.step, p.at) for p in points[:3]] == [("loss", 3, 5.0), ("up", 3, 5.0), ("loss", 5, 0.0)]
    assert points[1].value == math.inf and math.isnan(points[2].value)
    assert [(p.name, p.step, p.at, p.value) for p in points[3:]] == [("x", 0, 7.0, 1.0), ("loss", 7, 0.0, 2.0)]
    assert checkpoints == [("epoch-4.pt", 4, 6.0)]
