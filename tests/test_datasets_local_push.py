"""Local push: a client on the service's host hands its dataset files over as open files, on a Unix socket.

The client opens each file itself (so it can pass only what its account may read) and passes the descriptor with a
one-time ticket the HTTP API gave for that file of that upload, after PUT's own checks; the service reads, hashes
and writes the same bytes once, and adds the file to the upload as PUT does. What it refuses, it refuses in PUT's
words, and leaves nothing of. A socket that is absent, dead, or does not take the ticket sends the push the HTTP way.

Against one real hub (its proxy and scheduler) of this module; the pure parts (tickets, the copy on a full disk,
the listener's files) without one, at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from nothing.magics import datasets
from nothing.magics.client import NothingClient
from nothing.scheduler.dataset_files import DISK_FULL, DatasetFiles, too_large

from .helpers import wait_for_sync
from .hub import Api, Hub, users_python

MiB = 1024 * 1024
TiB = 1024**4


@pytest.fixture(scope="module")
def hub():
    h = Hub(Path(tempfile.mkdtemp(prefix="nothing-local-push-hub-")) / "hub",
            ["--NothingScheduler.gpu_mode=virtual", "--NothingScheduler.virtual_gpus=1"])
    h.start()
    h.store = h.root / "var" / "scheduler" / "datasets"
    h.socket = str(h.root / "var" / "scheduler" / "sockets" / "dataset-push.sock")
    yield h
    h.stop()
    shutil.rmtree(h.root.parent, ignore_errors=True)


def user(hub, name: str | None = None) -> tuple[str, Api]:
    name = name or f"lp-{secrets.token_hex(3)}"
    hub.create_user(name)
    return name, Api(hub, hub.token_for(name))


def counting_client(hub, api: Api) -> tuple[NothingClient, list[tuple[str, str]]]:
    """The client as a notebook runs it, recording ``(method, path)`` of every upload call it makes over HTTP."""
    client = NothingClient(f"{hub.url}/services/nothing/", api.session.headers["Authorization"].split(" ", 1)[1])
    calls: list[tuple[str, str]] = []

    def record(response, *args, **kwargs):
        path = response.request.path_url.split("?", 1)[0]
        if "/uploads/" in path:
            calls.append((response.request.method, path.rsplit("/", 1)[-1]))

    client.session.hooks["response"].append(record)
    return client, calls


def objects(hub) -> int:
    return sum(1 for p in (hub.store / "objects").rglob("*") if p.is_file())


def incoming(hub) -> list[str]:
    return os.listdir(hub.store / "incoming")


def open_upload(api: Api, name: str) -> tuple[int, str, dict]:
    dataset = api("POST", "/datasets", json={"name": name}).json()["id"]
    opened = api("POST", f"/datasets/{dataset}/uploads").json()
    return dataset, opened["upload"], opened


def ticket(api: Api, dataset: int, upload: str, path: str):
    return api("POST", f"/datasets/{dataset}/uploads/{upload}/tickets", params={"path": path})


def hand_over(where: str, request: dict, fd: int | None) -> dict:
    """The protocol by hand: one JSON line with the open file, one JSON line back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(where)
        socket.send_fds(s, [json.dumps(request).encode() + b"\n"], [] if fd is None else [fd])
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            assert chunk, f"the service closed the connection without an answer (so far: {data!r})"
            data += chunk
    return json.loads(data)


def upload_files(api: Api, dataset: int, upload: str) -> list[dict]:
    return api("GET", f"/datasets/{dataset}/uploads/{upload}").json()["files"]


def folder_of_unique_files(root: Path, empty: bool = True) -> dict[str, bytes]:
    """A folder whose contents no other test stored (the store is shared by the whole hub), but for the empty
    file."""
    files = {"a.csv": f"1,2 {root}\n".encode(), "sub/b.bin": os.urandom(3 * MiB + 5),
             "sub/deeper/c.txt": f"c {root}".encode(), **({"empty.txt": b""} if empty else {})}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


# ---------------------------------------------------------------------------------------------------- the push
@pytest.mark.hub
def test_a_push_on_the_services_host_hands_every_file_over_the_socket_and_stores_exactly_its_bytes(hub, tmp_path):
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path)
    client, calls = counting_client(hub, api)
    before = objects(hub)

    result = datasets.push(client, "handed", tmp_path)

    # Sent: everything the store did not have (the empty file it may have from another test).
    assert result.local == 4 and sorted(result.sent + result.reused) == sorted(files)
    assert set(result.reused) <= {"empty.txt"} and result.bytes_sent == sum(map(len, files.values()))
    # No file crossed HTTP: neither offered by hash nor PUT; one ticket per file.
    assert [c for c in calls if c[1] in ("files", "tickets")] == [("POST", "tickets")] * 4, calls
    version = json.loads((hub.store / "trees" / str(result.dataset["id"]) / "1.json").read_text())
    assert version == sorted([p, hashlib.sha256(d).hexdigest(), len(d)] for p, d in files.items())
    tree = hub.store / "trees" / str(result.dataset["id"]) / "1"
    assert {p: (tree / p).read_bytes() for p in files} == files
    assert objects(hub) == before + len(result.sent) and incoming(hub) == []


@pytest.mark.hub
def test_the_upload_names_the_socket_which_anyone_may_reach_and_only_a_ticket_opens(hub):
    _, api = user(hub)
    _, _, opened = open_upload(api, "where")
    assert opened["local_socket"] == hub.socket
    mode = os.stat(hub.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
    assert stat.S_IMODE(os.stat(Path(hub.socket).parent).st_mode) == 0o711


@pytest.mark.hub
def test_pushing_the_same_content_again_stores_it_once(hub, tmp_path):
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path)
    client, _ = counting_client(hub, api)
    datasets.push(client, "first", tmp_path)
    before = objects(hub)

    again = datasets.push(client, "second", tmp_path)

    assert again.local == 4 and sorted(again.reused) == sorted(files) and again.sent == [] and again.bytes_sent == 0
    assert objects(hub) == before and incoming(hub) == []
    assert again.dataset["files"] == 4 and again.dataset["bytes"] == sum(map(len, files.values()))
    assert again.summary().endswith("4 files (0 sent, 4 already stored), 0 bytes sent")


# ---------------------------------------------------------------------------------------------------- tickets
@pytest.mark.hub
def test_a_ticket_is_good_once_for_its_users_upload_and_path_only(hub, tmp_path):
    _, owner = user(hub)
    _, other = user(hub)
    dataset, upload, _ = open_upload(owner, "tickets")
    dataset2, upload2, _ = open_upload(owner, "tickets-2")
    source = tmp_path / "f.txt"
    source.write_bytes(f"ticketed {tmp_path}".encode())
    fd = os.open(source, os.O_RDONLY)
    try:
        # The API gives a ticket after PUT's checks: another user's upload is not found, a bad path is refused.
        r = ticket(other, dataset, upload, "f.txt")
        assert r.status_code == 404 and r.json()["message"] == f"dataset {dataset} not found", r.text
        r = ticket(owner, dataset, upload, "../f.txt")
        assert r.status_code == 400 and "not a relative path inside the dataset" in r.json()["message"]
        r = ticket(owner, dataset, upload, "/f.txt")
        assert r.status_code == 400
        r = ticket(owner, dataset, "0" * 32, "f.txt")
        assert r.status_code == 404 and "upload" in r.json()["message"]

        given = ticket(owner, dataset, upload, "f.txt")
        assert given.status_code == 201, given.text
        assert {k: v for k, v in given.json().items() if k != "ticket"} == {
            "path": "f.txt", "socket": hub.socket, "service_uid": os.geteuid(), "expires_in": 60}
        good = given.json()["ticket"]
        request = {"ticket": good, "dataset": dataset, "upload": upload, "path": "f.txt"}
        # Another path, or another upload, than the ticket's: refused, and the ticket is used up all the same.
        for wrong in ({"path": "g.txt"}, {"upload": upload2}, {"dataset": dataset2}):
            t = ticket(owner, dataset, upload, "f.txt").json()["ticket"]
            answer = hand_over(hub.socket, {**request, "ticket": t, **wrong}, fd)
            assert answer["status"] == 403 and "the ticket is for 'f.txt' of upload" in answer["error"], answer
            answer = hand_over(hub.socket, {**request, "ticket": t}, fd)
            assert answer["status"] == 403 and answer["error"].startswith("unknown ticket"), answer
        for made_up in (secrets.token_urlsafe(32), "", None, 7):
            answer = hand_over(hub.socket, {**request, "ticket": made_up}, fd)
            assert answer["status"] == 403 and answer["error"].startswith("unknown ticket"), answer
        assert upload_files(owner, dataset, upload) == [] and upload_files(owner, dataset2, upload2) == []

        answer = hand_over(hub.socket, request, fd)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert answer == {"path": "f.txt", "sha256": digest, "bytes": source.stat().st_size, "reused": False}
        again = hand_over(hub.socket, request, fd)  # the same ticket twice
        assert again["status"] == 403 and again["error"].startswith("unknown ticket"), again
    finally:
        os.close(fd)
    assert upload_files(owner, dataset, upload) == [{"path": "f.txt", "sha256": digest, "bytes": answer["bytes"]}]
    assert owner("POST", f"/datasets/{dataset}/uploads/{upload}/commit").json()["files"] == 1
    r = ticket(owner, dataset, upload, "late.txt")  # committed: the upload is gone on every path
    assert r.status_code == 404


def _as_user_script() -> str:
    return (
        "import json, os, socket, sys\n"
        "where, request, path = sys.argv[1], sys.argv[2], sys.argv[3]\n"
        "fd = os.open(path, os.O_RDONLY)\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.connect(where)\n"
        "socket.send_fds(s, [request.encode() + b'\\n'], [fd])\n"
        "data = b''\n"
        "while not data.endswith(b'\\n'):\n"
        "    chunk = s.recv(4096)\n"
        "    if not chunk:\n"
        "        break\n"
        "    data += chunk\n"
        "print(data.decode())\n"
    )


@pytest.mark.hub
@pytest.mark.skipif(os.geteuid() != 0, reason="runs processes as the users' own accounts")
def test_a_ticket_is_taken_only_from_a_process_of_its_users_own_account(hub):
    """SO_PEERCRED: A's ticket from a process of B's account is refused; from A's own, the file is stored (which
    also shows the users' accounts reach the socket through the data folder)."""
    from nothing.scheduler.accounts import UnixAccounts

    a, api_a = user(hub)
    b, _ = user(hub)
    mapping = UnixAccounts(**hub.accounts_config)
    account_a, account_b = mapping.account(a), mapping.account(b)  # what a notebook of theirs runs as
    shared = Path(tempfile.mkdtemp(prefix="nothing-local-push-peer-"))
    try:
        shared.chmod(0o755)
        source = shared / "both-may-read.txt"
        source.write_bytes(f"peer {shared}".encode())
        source.chmod(0o644)
        dataset, upload, _ = open_upload(api_a, "peer")

        def send_as(account) -> dict:
            t = ticket(api_a, dataset, upload, "p.txt").json()["ticket"]
            request = json.dumps({"ticket": t, "dataset": dataset, "upload": upload, "path": "p.txt"})
            out = subprocess.run([users_python(), "-I", "-c", _as_user_script(), hub.socket, request, str(source)],
                                 user=account.uid, group=account.gid, extra_groups=[], capture_output=True,
                                 text=True, timeout=60, cwd="/")
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        refused = send_as(account_b)
        assert refused["status"] == 403 and f"the ticket is {a}'s" in refused["error"] and \
            f"(uid {account_b.uid})" in refused["error"], refused
        assert upload_files(api_a, dataset, upload) == []
        taken = send_as(account_a)
        assert taken["path"] == "p.txt" and taken["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert [f["path"] for f in upload_files(api_a, dataset, upload)] == ["p.txt"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- refusals
@pytest.mark.hub
def test_what_is_not_a_readable_regular_file_within_the_limit_is_refused_in_puts_words_leaving_nothing(
        hub, tmp_path):
    _, api = user(hub)
    dataset, upload, _ = open_upload(api, "refusals")
    (tmp_path / "folder").mkdir()
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(TiB + 1)  # sparse: one byte over c.Datasets.max_file_bytes (1 TiB)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        (lambda: os.open(tmp_path / "folder", os.O_RDONLY), 400, "only a regular file can be pushed, not a directory"),
        (lambda: os.open(plain, os.O_WRONLY), 400, "the file must be passed open for reading"),
        (lambda: os.open(plain, os.O_PATH), 400, "the file must be passed open for reading"),
        (lambda: os.open(fifo, os.O_RDWR), 400, "only a regular file can be pushed, not a pipe"),
        (lambda: os.open("/proc/self/status", os.O_RDONLY), 400, "files of /proc and /sys cannot be pushed"),
        (lambda: os.open(huge, os.O_RDONLY), 413, too_large(TiB)),
        (lambda: None, 400, "send the open file with the request (SCM_RIGHTS)"),
    ]
    for opener, status, message in cases:
        fd = opener()
        try:
            t = ticket(api, dataset, upload, "f").json()["ticket"]
            answer = hand_over(hub.socket, {"ticket": t, "dataset": dataset, "upload": upload, "path": "f"}, fd)
        finally:
            if fd is not None:
                os.close(fd)
        assert answer == {"error": message, "status": status}, answer
        assert incoming(hub) == [] and upload_files(api, dataset, upload) == []
    # PUT says the same of a file over the limit (its words, from one definition).
    assert too_large(TiB) == f"a file may be at most {TiB} bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # not a request: refused, and nothing else
        s.connect(hub.socket)
        s.sendall(b"not json\n")
        answer = json.loads(s.makefile().readline())
    assert answer["status"] == 400 and "one JSON object on one line" in answer["error"]


@pytest.mark.hub
def test_a_client_that_leaves_mid_file_leaves_nothing_and_the_file_can_be_sent_again(hub, tmp_path):
    _, api = user(hub)
    dataset, upload, _ = open_upload(api, "left")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(16 * 1024 * MiB)  # sparse: read fast, but seconds to hash and write
    t = ticket(api, dataset, upload, "big.bin").json()["ticket"]
    fd = os.open(big, os.O_RDONLY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(hub.socket)
            socket.send_fds(s, [json.dumps({"ticket": t, "dataset": dataset, "upload": upload,
                                            "path": "big.bin"}).encode() + b"\n"], [fd])
            wait_for_sync(lambda: any(os.path.getsize(hub.store / "incoming" / n) > MiB for n in incoming(hub)),
                          interval=0.01, message="the copy to start")
    finally:
        os.close(fd)
    wait_for_sync(lambda: incoming(hub) == [], message="the half-copied file to be removed")
    assert upload_files(api, dataset, upload) == []
    small = tmp_path / "small.txt"
    small.write_bytes(f"after {tmp_path}".encode())
    client, _ = counting_client(hub, api)
    client.local_sockets[upload] = hub.socket
    answer = client.push_upload_file_locally(dataset, upload, "big.bin", small)
    assert answer["bytes"] == small.stat().st_size and [f["path"] for f in upload_files(api, dataset, upload)] == \
        ["big.bin"]


@pytest.mark.hub
def test_a_file_whose_hand_over_breaks_is_handed_over_again_alone(hub, tmp_path):
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path, empty=False)
    client, calls = counting_client(hub, api)
    real, attempts = client.push_upload_file_locally, []

    def flaky(dataset_id, upload, path, local, stop=None):
        attempts.append(path)
        if path == "sub/b.bin" and attempts.count(path) == 1:
            raise datasets.NothingError("the local push of sub/b.bin was cut off: connection reset")
        return real(dataset_id, upload, path, local, stop)

    client.push_upload_file_locally = flaky
    result = datasets.push(client, "flaky-local", tmp_path)
    assert sorted(attempts) == sorted([*files, "sub/b.bin"]) and result.local == 3
    assert sorted(result.sent) == sorted(files) and calls.count(("PUT", "files")) == 0


@pytest.mark.hub
def test_tickets_come_through_the_proxy_once_the_services_own_listener_stops_answering(hub, tmp_path):
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path, empty=False)
    client, _ = counting_client(hub, api)
    tickets: list[str] = []
    client.session.hooks["response"].append(
        lambda r, *args, **kwargs: tickets.append(r.request.url) if "/tickets" in r.request.url else None)
    opened = client.open_upload

    def open_then_lose_the_listener(dataset_id):
        upload = opened(dataset_id)
        assert client.direct_uploads[upload] == hub.service_url + "api"  # tickets come from there first
        client.direct_uploads[upload] = "http://127.0.0.1:9/services/nothing/api"  # gone after the probe
        return upload

    client.open_upload = open_then_lose_the_listener
    result = datasets.push(client, "ticket-proxy", tmp_path)
    assert result.local == 3 and sorted(result.sent) == sorted(files)
    assert len(tickets) == 3 and all(u.startswith(hub.api_url) for u in tickets), tickets


# ---------------------------------------------------------------------------------------------------- the HTTP way
@pytest.mark.hub
def test_a_push_goes_the_http_way_when_the_socket_is_not_there(hub, tmp_path):
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path, empty=False)
    client, calls = counting_client(hub, api)
    away = hub.socket + ".away"
    os.rename(hub.socket, away)
    try:
        result = datasets.push(client, "nosocket", tmp_path)
    finally:
        os.rename(away, hub.socket)
    assert result.local == 0 and sorted(result.sent) == sorted(files) and result.dataset["files"] == 3
    assert ("POST", "tickets") not in calls and calls.count(("PUT", "files")) == 3, calls


class OtherService:
    """A socket at the path the upload names that is not this service's (another host's, after a restart...):
    it knows no ticket."""

    def __init__(self, path: str):
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"error": "unknown ticket", "status": 403}).encode() + b"\n")


@pytest.mark.hub
@pytest.mark.parametrize("kind", ["another-service", "dead"])
def test_a_socket_that_does_not_take_the_upload_sends_it_the_http_way(hub, tmp_path, kind):
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path / "data", empty=False)
    where = str(tmp_path / "other.sock")
    other = OtherService(where)
    if kind == "dead":
        other.sock.close()  # the file stays; nobody listens: connections are refused
    client, calls = counting_client(hub, api)
    opened = client.open_upload

    def open_then_point_elsewhere(dataset_id):
        upload = opened(dataset_id)
        assert client.local_socket(upload) == hub.socket
        client.local_sockets[upload] = where
        return upload

    client.open_upload = open_then_point_elsewhere
    result = datasets.push(client, f"elsewhere-{kind}", tmp_path / "data")
    assert result.local == 0 and sorted(result.sent) == sorted(files) and result.dataset["files"] == 3
    assert calls.count(("PUT", "files")) == 3 and calls.count(("POST", "tickets")) <= 2, calls
    assert other.connections <= 2  # the first refusal sends the rest over HTTP (the second file was on its way)
    other.sock.close()


@pytest.mark.hub
def test_no_file_is_handed_to_a_socket_whose_listener_is_not_the_services_account(hub, tmp_path):
    """Whoever listens at the path (a squatter while the service is down) gets nothing: the client checks the
    listener's uid (SO_PEERCRED) is the one the API says the service runs as, before it passes a file."""
    _, api = user(hub)
    files = folder_of_unique_files(tmp_path, empty=False)
    client, calls = counting_client(hub, api)
    real = client._ticket
    client._ticket = lambda *args: {**real(*args), "service_uid": 4242}  # so the real listener (root) is not it
    result = datasets.push(client, "squatted", tmp_path)
    assert result.local == 0 and sorted(result.sent) == sorted(files) and calls.count(("PUT", "files")) == 3, calls
    assert incoming(hub) == []


# ---------------------------------------------------------------------------------------------------- no hub
def test_tickets_expire_and_a_user_holds_a_bounded_number():
    from nothing.scheduler.local_push import Refused, Tickets

    now = [0.0]
    tickets = Tickets(seconds=60, per_user=2, clock=lambda: now[0])
    first = tickets.issue("ann", 1, "u" * 32, "a")
    second = tickets.issue("ann", 1, "u" * 32, "b")
    with pytest.raises(Refused, match="you hold 2 tickets not yet used") as refused:
        tickets.issue("ann", 1, "u" * 32, "c")
    assert refused.value.status == 429
    other = tickets.issue("bob", 2, "v" * 32, "a")  # one user's tickets are not another's limit
    taken = tickets.take(first)
    assert (taken.user, taken.dataset_id, taken.upload_id, taken.path) == ("ann", 1, "u" * 32, "a")
    assert tickets.take(first) is None
    tickets.issue("ann", 1, "u" * 32, "c")  # room again
    now[0] = 60.0
    assert tickets.take(second) is None and tickets.take(other) is None  # expired
    tickets.issue("ann", 1, "u" * 32, "d")
    tickets.issue("ann", 1, "u" * 32, "e")


@pytest.mark.parametrize("size", [0, 1, 1 * MiB, 1 * MiB + 1, 5 * MiB + 12345])
def test_a_copy_stores_and_names_exactly_the_bytes_it_read_hashing_inline_beside_or_switching(tmp_path, size):
    from concurrent.futures import ThreadPoolExecutor

    from nothing.scheduler.local_push import BUFFER_BYTES, copy_in

    assert BUFFER_BYTES == 1 * MiB  # the sizes above fall on, just past and between its buffers
    files = DatasetFiles(tmp_path / "store")
    files.prepare()
    data = os.urandom(size)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    calls = []
    with ThreadPoolExecutor(1) as pool:
        for name, hasher in (("inline", lambda: None), ("beside", lambda: pool),
                             ("switching", lambda: calls.append(1) or (pool if len(calls) % 3 else None))):
            fd = os.open(source, os.O_RDONLY)
            try:
                os.lseek(fd, 7, os.SEEK_SET)  # the client's own offset is not where the copy reads
                temp, sha256, total = copy_in(files, fd, TiB, threading.Event(), hasher)
            finally:
                os.close(fd)
            assert (sha256, total) == (hashlib.sha256(data).hexdigest(), size), name
            assert Path(temp).read_bytes() == data, name
            os.unlink(temp)
    assert len(calls) == -(-size // MiB)  # asked once a buffer


def test_a_copy_given_up_while_its_hash_runs_beside_leaves_nothing(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from nothing.scheduler.local_push import Cancelled, copy_in

    files = DatasetFiles(tmp_path / "store")
    files.prepare()
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(4 * MiB))
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        def hasher():  # gives up after the first buffer's hash has started
            cancel.set()
            return pool

        fd = os.open(source, os.O_RDONLY)
        try:
            with pytest.raises(Cancelled):
                copy_in(files, fd, TiB, cancel, hasher)
        finally:
            os.close(fd)
    assert os.listdir(files.root / "incoming") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_a_disk_that_fills_during_a_local_copy_is_puts_refusal_and_leaves_nothing(tmp_path):
    from nothing.scheduler.local_push import Refused, copy_in

    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(store)], check=True)
    try:
        files = DatasetFiles(store)
        files.prepare()
        source = tmp_path / "three-mib.bin"
        source.write_bytes(os.urandom(3 * MiB))
        fd = os.open(source, os.O_RDONLY)
        try:
            with pytest.raises(Refused) as refused:
                copy_in(files, fd, TiB, threading.Event())
        finally:
            os.close(fd)
        assert (refused.value.status, str(refused.value)) == (413, DISK_FULL)
        assert DISK_FULL.startswith("the server's disk is full: the file was not stored")
        assert os.listdir(store / "incoming") == []
    finally:
        subprocess.run(["umount", str(store)], check=False)


def test_the_listener_makes_its_socket_in_place_and_takes_it_away(tmp_path):
    from nothing.scheduler.datasets import Datasets
    from nothing.scheduler.local_push import LocalPush

    async def life(settings) -> tuple[str | None, bool]:
        push = LocalPush(Datasets(str(tmp_path), **settings))
        await push.start()
        path = push.path
        listening = path is not None and stat.S_ISSOCK(os.stat(path).st_mode)
        await push.stop()
        assert push.path is None and (path is None or not os.path.exists(path))
        return path, listening

    assert asyncio.run(life({})) == (str(tmp_path / "sockets" / "dataset-push.sock"), True)
    assert asyncio.run(life({"local_push": False})) == (None, False)
    configured = tmp_path / "run" / "nothing" / "push.sock"
    assert asyncio.run(life({"local_push_socket": str(configured)})) == (str(configured), True)
    assert stat.S_IMODE(configured.parent.stat().st_mode) == 0o711  # made, passable by the users' accounts
    configured.write_text("not a socket")  # never replaced: the listener stays off, and says why
    assert asyncio.run(life({"local_push_socket": str(configured)})) == (None, False)
    assert configured.read_text() == "not a socket"
