"""Datasets from the client: ``nothing dataset push / ls / show / rm``, ``%nothing_dataset`` and ``--dataset``.

Against the session's live hub: a push sends each file once (a second push of the
same folder with one file changed sends that file only), and a run submitted with
``nothing submit train.py --dataset train=NAME`` reads the version it names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nothing.magics.client import NothingClient
from nothing.magics.train import NothingMagics

pytestmark = pytest.mark.hub

NOTHING = str(Path(sys.executable).parent / "nothing")


def nothing(hub, token, cwd, *args, check=True):
    env = dict(os.environ, NOTHING_SERVICE_URL=f"{hub.url}/services/nothing/", JUPYTERHUB_API_TOKEN=token)
    result = subprocess.run([NOTHING, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def counting_client(hub, token) -> tuple[NothingClient, list[str]]:
    """A client that records the path of every file it sends with PUT (what crossed the network); over HTTP, as
    from another host (the local socket's push: tests/test_datasets_local_push.py)."""
    client = NothingClient(f"{hub.url}/services/nothing/", token, local_push=False)
    sent: list[str] = []

    def record(response, *args, **kwargs):
        if response.request.method == "PUT":
            sent.append(response.request.url)

    client.session.hooks["response"].append(record)
    return client, sent


def test_push_twice_sends_only_the_changed_file_and_a_run_reads_the_dataset(hub, tmp_path):
    from nothing.magics import datasets

    hub.create_user("dspush")
    token = hub.token_for("dspush")
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.csv").write_text("1,2\n")
    (folder / "sub" / "b.csv").write_text("3,4\n")
    (folder / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 7))

    out = nothing(hub, token, tmp_path, "dataset", "push", "digits", str(folder), "--description", "d").stdout
    assert "dataset digits version 1: 3 files (3 sent, 0 already stored)" in out, out
    (folder / "a.csv").write_text("9,9\n")
    client, sent = counting_client(hub, token)
    result = datasets.push(client, "digits", folder)
    assert result.dataset["latest"] == 2 and result.sent == ["a.csv"] and len(sent) == 1, (result, sent)
    assert sorted(result.reused) == ["big.bin", "sub/b.csv"]

    listed = nothing(hub, token, tmp_path, "dataset", "ls").stdout
    assert re.search(r"^digits\s+-\s+2\s+2\s+3\s", listed, re.M), listed

    code = tmp_path / "code"  # the data is not part of the run's code snapshot: that is the point
    code.mkdir()
    (code / "train.py").write_text(
        "import os\nprint('read', open(os.path.join(os.environ['EM_DATASET_TRAIN'], 'a.csv')).read().strip())\n")
    for ref, expected in (("digits", "read 9,9"), ("digits:1", "read 1,2")):
        out = nothing(hub, token, code, "submit", "train.py", "--dataset", f"train={ref}").stdout
        run_id = int(re.search(r"Run (\d+)", out).group(1))
        assert client.wait(run_id, timeout=60)["state"] == "COMPLETE", client.logs(run_id)[0]
        assert expected in client.logs(run_id)[0]

    shown = nothing(hub, token, tmp_path, "dataset", "show", "digits").stdout
    assert re.search(r"^1\s+\S+ \S+\s+dspush\s+3\s+2\.1 MB\s+upload", shown, re.M), shown
    assert re.search(r"^2\s+\S+ \S+\s+dspush\s+3\s", shown, re.M), shown
    assert re.search(r"used by: run \d+ \(COMPLETE\), run \d+ \(COMPLETE\)", shown), shown
    files = nothing(hub, token, tmp_path, "dataset", "show", "digits:2").stdout
    assert "version 2: 3 files" in files and re.search(r"^sub/b\.csv\s+4 B", files, re.M), files

    r = nothing(hub, token, tmp_path, "dataset", "show", "digits:7", check=False)
    assert (r.returncode, r.stderr.strip()) == (2, "nothing: dataset digits has no version 7 (versions: 1, 2)")
    assert nothing(hub, token, tmp_path, "dataset", "rm", "digits:1").stdout.strip() == \
        "version 1 of dataset digits deleted"
    assert nothing(hub, token, tmp_path, "dataset", "rm", "digits").stdout.strip() == "dataset digits deleted"
    assert "no datasets yet" in nothing(hub, token, tmp_path, "dataset", "ls").stdout
    r = nothing(hub, token, tmp_path, "dataset", "rm", "digits", check=False)
    assert (r.returncode, r.stderr.strip()) == (2, "nothing: dataset 'digits' not found")


def test_a_file_whose_transfer_fails_is_sent_again_alone(hub, tmp_path):
    from nothing.magics import datasets

    hub.create_user("dsretry")
    client, sent = counting_client(hub, hub.token_for("dsretry"))
    # Contents no other test stored: the store keeps each content once, for every user of the hub.
    (tmp_path / "x.txt").write_text(f"x {tmp_path}")
    (tmp_path / "y.txt").write_text(f"y {tmp_path}")
    real, failed = client.put_upload_file, []

    def flaky(dataset_id, upload, path, local, sha256):
        if path == "y.txt" and not failed:
            failed.append(path)
            raise datasets.NothingError("cannot reach the NothingAI scheduler: connection reset")
        return real(dataset_id, upload, path, local, sha256)

    client.put_upload_file = flaky
    result = datasets.push(client, "flaky", tmp_path)
    assert failed == ["y.txt"] and result.sent == ["x.txt", "y.txt"] and result.dataset["files"] == 2


def test_a_push_sends_its_files_to_the_services_own_listener_not_through_the_proxy(hub, tmp_path):
    from nothing.magics import datasets

    hub.create_user("dsdirect")
    client, sent = counting_client(hub, hub.token_for("dsdirect"))
    for i in range(3):  # several files: each next one is hashed while the one before is sent
        (tmp_path / f"part-{i}.bin").write_bytes(os.urandom(1024 * 1024 + i))
    result = datasets.push(client, "direct", tmp_path)
    assert result.sent == ["part-0.bin", "part-1.bin", "part-2.bin"] and result.dataset["files"] == 3
    assert len(sent) == 3 and all(url.startswith(hub.service_url) for url in sent), sent
    assert client.dataset_version(result.dataset["id"], 1)["bytes"] == 3 * 1024 * 1024 + 3


def test_a_push_takes_the_proxy_when_the_direct_address_does_not_answer(hub, tmp_path):
    from nothing.magics import datasets

    hub.create_user("dsnodirect")
    client, sent = counting_client(hub, hub.token_for("dsnodirect"))
    (tmp_path / "a.txt").write_text(f"a {tmp_path}")
    probe = client._reach_direct
    client._reach_direct = lambda url, *args: probe("http://127.0.0.1:9/services/nothing/", *args)  # port 9: closed
    result = datasets.push(client, "nodirect", tmp_path)
    assert result.sent == ["a.txt"] and len(sent) == 1 and sent[0].startswith(hub.url + "/services/nothing/"), sent


def test_a_file_cut_off_on_the_direct_address_is_sent_again_through_the_proxy(hub, tmp_path):
    from nothing.magics import datasets

    hub.create_user("dsdirectcut")
    client, sent = counting_client(hub, hub.token_for("dsdirectcut"))
    (tmp_path / "b.txt").write_text(f"b {tmp_path}")
    opened = client.open_upload

    def open_then_lose_the_listener(dataset_id):
        upload = opened(dataset_id)
        assert client.direct_uploads[upload] == hub.service_url + "api"
        client.direct_uploads[upload] = "http://127.0.0.1:9/services/nothing/api"  # gone after the probe
        return upload

    client.open_upload = open_then_lose_the_listener
    result = datasets.push(client, "directcut", tmp_path)
    assert result.sent == ["b.txt"] and len(sent) == 1 and sent[0].startswith(hub.url + "/services/nothing/"), sent
    assert client.direct_uploads == {}  # forgotten at commit


@pytest.fixture
def ip(hub, monkeypatch):
    hub.create_user("dsmagic")
    monkeypatch.setenv("NOTHING_SERVICE_URL", f"{hub.url}/services/nothing/")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.token_for("dsmagic"))
    shell = InteractiveShell.instance()
    shell.register_magics(NothingMagics)
    yield shell
    InteractiveShell.clear_instance()


def test_the_dataset_magic_pushes_lists_shows_and_removes(ip, tmp_path, capsys):
    (tmp_path / "f.txt").write_text("hello")
    ip.run_line_magic("nothing_dataset", f"push notes {tmp_path}")
    assert "dataset notes version 1: 1 file (1 sent, 0 already stored)" in capsys.readouterr().out
    ip.run_line_magic("nothing_dataset", f"push notes {tmp_path / 'f.txt'}")
    assert "dataset notes version 2: 1 file (0 sent, 1 already stored)" in capsys.readouterr().out
    ip.run_line_magic("nothing_dataset", "ls")
    assert re.search(r"^notes\s+-\s+2\s+2\s+1\s", capsys.readouterr().out, re.M)
    ip.run_line_magic("nothing_dataset", "show notes")
    assert "dataset notes (owner dsmagic)" in capsys.readouterr().out
    with pytest.raises(UsageError, match="needs the dataset's name"):
        ip.run_line_magic("nothing_dataset", "show")
    with pytest.raises(UsageError, match="dataset 'other' not found"):
        ip.run_line_magic("nothing_dataset", "rm other")
    ip.run_line_magic("nothing_dataset", "rm notes")
    assert "dataset notes deleted" in capsys.readouterr().out


@pytest.mark.parametrize("option, message", [
    (["--dataset", "train"], "--dataset takes NAME=DATASET[:VERSION]"),
    (["--dataset", "1x=mnist"], "--dataset takes NAME=DATASET[:VERSION]"),
    (["--dataset", "t=a/b/c"], "--dataset takes NAME=DATASET[:VERSION]"),
    (["--dataset", "t=m", "--dataset", "T=n"], "--dataset T is given twice"),
    ([a for i in range(11) for a in ("--dataset", f"d{i}=m")], "at most 10 datasets, not 11"),
])
def test_bad_dataset_options_are_refused_before_anything_is_sent(option, message):
    from nothing.magics.options import OptionError, make_parser, parse_run_args, spec_from_options

    ns = parse_run_args(make_parser("nothing submit", True), ["t.py", *option])
    with pytest.raises(OptionError, match=re.escape(message)):
        spec_from_options(ns, "t.py")


README = (Path(__file__).parent.parent / "README.md").read_text()


def readme_dataset_commands() -> list[str]:
    """The commands of the README's "Datasets" section, verbatim, in order."""
    section = README.split("\n## Datasets\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's Datasets section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_dataset_examples_work_verbatim(hub, tmp_path):
    import shlex

    hub.create_user("dsreadme")
    token = hub.token_for("dsreadme")
    client = NothingClient(f"{hub.url}/services/nothing/", token)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.txt").write_text("seven\n")
    (tmp_path / "train.py").write_text(
        "import os\nprint('read', open(os.path.join(os.environ['EM_DATASET_TRAIN'], 'labels.txt')).read().strip())\n")
    commands = readme_dataset_commands()
    assert commands[0] == "nothing dataset push mnist ./data" and any("--dataset train=mnist" in c for c in commands)
    for command in commands:
        out = nothing(hub, token, tmp_path, *shlex.split(command)[1:]).stdout
        if command.startswith("nothing submit "):
            run_id = int(re.search(r"Run (\d+)", out).group(1))
            assert client.wait(run_id, timeout=60)["state"] == "COMPLETE", client.logs(run_id)[0]
            assert "read seven" in client.logs(run_id)[0]
        elif command.startswith("nothing dataset show "):
            assert "used by: run" in out, out
    assert client.datasets() == []


@pytest.mark.parametrize("failures, status, tries, sent", [
    ([None], None, 2, True),  # the connection broke once: sent again
    ([502, 503], None, 3, True),  # the service failed twice: the third try is the last
    ([500, 500, 500], 500, 3, False),  # three failures: given up, in the file's name
    ([413], 413, 1, False),  # a refusal is final: never sent again
])
def test_a_file_is_sent_again_only_when_the_transfer_or_the_service_failed(monkeypatch, failures, status, tries,
                                                                          sent):
    from nothing.magics import datasets
    from nothing.magics.client import NothingError

    monkeypatch.setattr(datasets.time, "sleep", lambda seconds: None)
    calls = []

    def send():
        calls.append(1)
        if len(calls) <= len(failures):
            raise NothingError("cut off", failures[len(calls) - 1])
        return "stored"

    if sent:
        assert datasets._again_when_cut("a/b.bin", send) == "stored"
    else:
        with pytest.raises(NothingError, match=r"^a/b\.bin: cut off") as e:
            datasets._again_when_cut("a/b.bin", send)
        assert e.value.status == status
    assert len(calls) == tries


def test_a_local_hand_over_is_not_tried_again_once_the_push_gives_up_or_the_socket_is_unavailable(monkeypatch):
    import threading

    from nothing.magics import datasets
    from nothing.magics.client import LocalPushUnavailable, NothingError

    monkeypatch.setattr(datasets.time, "sleep", lambda seconds: None)
    abort, calls = threading.Event(), []

    def broken():
        calls.append(1)
        abort.set()  # another file failed meanwhile: the push is over
        raise NothingError("connection reset", None)

    with pytest.raises(NothingError, match="connection reset"):
        datasets._again_when_cut("x", broken, abort)
    assert len(calls) == 1

    def unavailable():
        calls.append(1)
        raise LocalPushUnavailable("not this service's socket", 403)

    with pytest.raises(LocalPushUnavailable):  # as it is: the caller takes the HTTP way
        datasets._again_when_cut("x", unavailable, threading.Event())
    assert len(calls) == 2
