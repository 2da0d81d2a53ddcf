"""Submissions are checked the same way by the service and the client."""

import pytest

from nothing.magics.options import OptionError, make_parser, parse_hp, parse_run_args, spec_from_options
from nothing.scheduler.spec import SpecError, parse_duration, parse_memory, parse_submission


@pytest.mark.parametrize("text,seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("120", 120),
                                          (30, 30), ("1d", 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "2x", "-5", 0, "h"])
def test_bad_durations(bad):
    with pytest.raises(SpecError):
        parse_duration(bad)


@pytest.mark.parametrize("text,size", [("8G", 8 * 1024**3), ("512M", 512 * 1024**2), ("512Mi", 512 * 1024**2),
                                       ("1.5GB", int(1.5 * 1024**3)), (1000, 1000), ("100", 100)])
def test_memory_sizes(text, size):
    assert parse_memory(text) == size


def test_submission_defaults():
    values = parse_submission({"entry_point": "./train.py"}, 4, 8, is_admin=False)
    assert values == {"name": "", "experiment": "default", "entry_point": "train.py", "args": [],
                      "hyperparameters": {}, "gpus": 0, "cpus": 1, "memory_bytes": 0, "priority": 0,
                      "max_seconds": None, "group": "", "preemptible": False, "metric_rules": None,
                      "checkpoint_run": None, "checkpoint_name": None, "dataset_refs": [],
                      "nodes": 1, "gpus_per_node": 0, "procs_per_node": None, "torchrun": False}


def test_runs_are_charged_to_one_of_the_users_groups():
    assert parse_submission({"entry_point": "t.py"}, 4, 8, False, ["vision", "nlp"])["group"] == "nlp"
    assert parse_submission({"entry_point": "t.py", "group": "vision"}, 4, 8, False, ["vision", "nlp"])["group"] \
        == "vision"
    with pytest.raises(SpecError, match="not a member of group 'speech' \\(your groups: nlp, vision\\)"):
        parse_submission({"entry_point": "t.py", "group": "speech"}, 4, 8, False, ["vision", "nlp"])
    with pytest.raises(SpecError, match="preemptible must be true or false"):
        parse_submission({"entry_point": "t.py", "preemptible": "yes"}, 4, 8, False, [])


def test_admins_may_raise_priority_users_may_lower_it():
    assert parse_submission({"entry_point": "t.py", "priority": 5}, 4, 8, is_admin=True)["priority"] == 5
    assert parse_submission({"entry_point": "t.py", "priority": -5}, 4, 8, is_admin=False)["priority"] == -5
    with pytest.raises(SpecError, match="only admins"):
        parse_submission({"entry_point": "t.py", "priority": 1}, 4, 8, is_admin=False)


def test_magic_options_become_a_submission():
    ns = make_parser("%%nothing_train", with_script=False).parse_args(
        ["--gpus", "2", "--experiment", "resnet", "--hp", "lr=0.01", "--hp", "epochs=20", "--max-time", "2h",
         "--memory", "8G", "--name", "r1"])
    spec = spec_from_options(ns, "nothing_cell.py")
    assert spec == {"entry_point": "nothing_cell.py", "args": [], "hyperparameters": {"lr": "0.01", "epochs": "20"},
                    "gpus": 2, "cpus": 1, "experiment": "resnet", "priority": 0, "name": "r1", "memory": "8G",
                    "max_time": "2h"}
    assert parse_submission(spec, 4, 8, is_admin=False)["max_seconds"] == 7200


@pytest.mark.parametrize("argv,message", [
    (["--gpus", "two"], "invalid int value: 'two'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--hp", "lr"], "--hp takes KEY=VALUE"),
    (["--max-time", "forever"], "max time must be a duration"),
    (["--memory", "lots"], "memory must be a size"),
    (["--gpus", "-1"], "cannot be negative"),
])
def test_bad_magic_options_give_one_clear_line(argv, message):
    with pytest.raises(OptionError, match=message):
        spec_from_options(make_parser("%%nothing_train", with_script=False).parse_args(argv), "x.py")


def test_line_form_takes_options_anywhere_and_passes_what_follows_the_separator_to_the_script():
    parser = make_parser("%nothing_train", with_script=True)
    ns = parse_run_args(parser, ["--gpus", "1", "train.py", "--hp", "lr=0.2", "--", "--epochs", "3", "--gpus", "9"])
    assert (ns.script, ns.script_args, ns.gpus, ns.hp) == ("train.py", ["--epochs", "3", "--gpus", "9"], 1, ["lr=0.2"])
    assert parse_hp(["a=1", "b.c=x=y"]) == {"a": "1", "b.c": "x=y"}


def shape(body: dict, cluster_nodes: int = 3, gpus_per_node: int = 4) -> dict:
    values = parse_submission(dict(body, entry_point="t.py"), gpus_per_node, 8, False, [], cluster_nodes=cluster_nodes)
    return {k: values[k] for k in ("gpus", "nodes", "gpus_per_node", "procs_per_node", "torchrun")}


def test_a_multi_node_shape_counts_its_gpus_on_every_node():
    assert shape({"nodes": 2, "gpus_per_node": 4, "procs_per_node": 4, "torchrun": True}) == {
        "gpus": 8, "nodes": 2, "gpus_per_node": 4, "procs_per_node": 4, "torchrun": True}
    assert shape({"nodes": "3", "gpus_per_node": "1"}) == {
        "gpus": 3, "nodes": 3, "gpus_per_node": 1, "procs_per_node": None, "torchrun": False}
    # gpus that split evenly over the nodes give the shape; a consistent gpus is accepted
    assert shape({"nodes": 2, "gpus": 6}) == {"gpus": 6, "nodes": 2, "gpus_per_node": 3, "procs_per_node": None,
                                              "torchrun": False}
    assert shape({"nodes": 2, "gpus_per_node": 2, "gpus": 4})["gpus"] == 4
    # one node with a shape is a plain run of that many GPUs
    assert shape({"gpus_per_node": 2}, cluster_nodes=1) == {
        "gpus": 2, "nodes": 1, "gpus_per_node": 2, "procs_per_node": None, "torchrun": False}


@pytest.mark.parametrize("body, cluster_nodes, message", [
    ({"nodes": 2, "gpus_per_node": 1}, 1,
     "asks for 2 nodes, but this cluster has only 1 node; a multi-node run needs that many nodes (ask for fewer, "
     "or ask an admin to add nodes)"),
    ({"nodes": 4, "gpus_per_node": 1}, 3, "asks for 4 nodes, but this cluster has only 3 nodes; "),
    ({"nodes": 2}, 3, "a run on 2 nodes needs gpus_per_node (the GPUs it takes on each node, at least 1), "
                      "e.g. nodes=2, gpus_per_node=1"),
    ({"nodes": 2, "gpus": 3}, 3, "; 3 GPUs do not split evenly over 2 nodes"),
    ({"nodes": 2, "gpus_per_node": 5}, 3, "asks for 5 GPUs per node, but the largest node has 4"),
    ({"nodes": 2, "gpus_per_node": 2, "gpus": 3}, 3,
     "gpus (3) must be nodes x gpus_per_node (2 x 2 = 4), or be left out"),
    ({"gpus": 8}, 3, "asks for 8 GPUs, but the largest node has 4; to use several nodes ask for nodes and "
                     "gpus_per_node, e.g. nodes=2, gpus_per_node=4"),
    ({"gpus": 8}, 1, "asks for 8 GPUs, but the largest node has 4; multi-node runs are not available on this cluster"),
    ({"nodes": 0}, 3, "nodes must be between 1 and 256, not 0"),
    ({"nodes": 2, "gpus_per_node": 1, "procs_per_node": 0}, 3, "procs_per_node must be between 1 and 64, not 0"),
    ({"procs_per_node": 65}, 3, "procs_per_node must be between 1 and 64, not 65"),
    ({"procs_per_node": "two"}, 3, "procs_per_node must be a whole number, not 'two'"),
    ({"torchrun": "yes"}, 3, "torchrun must be true or false, not 'yes'"),
    ({"gpus_per_node": -1}, 3, "gpus_per_node must be at least 0, not -1"),
])
def test_a_shape_the_cluster_cannot_run_is_refused_with_the_reason(body, cluster_nodes, message):
    with pytest.raises(SpecError) as e:
        shape(body, cluster_nodes)
    assert message in str(e.value)


def test_multi_node_options_of_the_magic_and_the_cli_become_the_shape_the_service_accepts():
    for parser in (make_parser("%%nothing_train", with_script=False), make_parser("nothing submit", with_script=True)):
        ns = parse_run_args(parser, ["--nodes", "2", "--gpus-per-node", "4", "--procs-per-node", "4", "--torchrun"])
        spec = spec_from_options(ns, "train.py")
        assert {k: spec[k] for k in ("gpus", "nodes", "gpus_per_node", "procs_per_node", "torchrun")} == {
            "gpus": 0, "nodes": 2, "gpus_per_node": 4, "procs_per_node": 4, "torchrun": True}
        assert shape(spec) == {"gpus": 8, "nodes": 2, "gpus_per_node": 4, "procs_per_node": 4, "torchrun": True}
    plain = spec_from_options(parse_run_args(make_parser("nothing submit", True), ["--gpus", "1"]), "t.py")
    assert not {"nodes", "gpus_per_node", "procs_per_node", "torchrun"} & set(plain)


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "2"], "--nodes 2 needs --gpus-per-node G (the GPUs on each node), e.g. --nodes 2 --gpus-per-node 1"),
    (["--nodes", "0"], "--nodes must be at least 1, not 0"),
    (["--nodes", "2", "--gpus-per-node", "2", "--gpus", "3"], "--gpus 3 is not --nodes x --gpus-per-node (2 x 2)"),
    (["--procs-per-node", "0"], "--procs-per-node must be at least 1, not 0"),
])
def test_the_client_refuses_a_shape_before_uploading(argv, message):
    with pytest.raises(OptionError) as e:
        spec_from_options(parse_run_args(make_parser("nothing submit", True), argv), "t.py")
    assert message in str(e.value)
