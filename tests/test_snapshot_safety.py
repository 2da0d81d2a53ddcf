"""Archives built to escape the run's folder or to stall the service are refused, and cheaply."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import zlib

import pytest

from nothing.scheduler.rundir import create_run_dir, give_to_user, hand_over_checkpoints
from nothing.scheduler.runenv import RunPaths
from nothing.scheduler.snapshot import SnapshotError, SnapshotLimits, check_archive, unpack

LIMITS = SnapshotLimits(10**6)


def member(name: str, kind: bytes = tarfile.REGTYPE, content: bytes = b"", link: str = "",
           mode: int = 0o644, size: int | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    info.size = len(content) if size is None else size
    return info, content


def archive(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return buf.getvalue()


@pytest.fixture
def sentinel(tmp_path):
    """A folder beside the destination with one file, and a check that nothing but it is beside ``dest``."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "flag").write_text("original")

    def untouched():
        assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"], "a refused archive left files behind"
        assert sorted(p.name for p in outside.iterdir()) == ["flag"]
        assert (outside / "flag").read_text() == "original"
    return outside, untouched


def cve_2025_4517_archive(dest) -> bytes:
    """The public proof of concept's shape: links whose resolved path passes PATH_MAX, then a way out through them.

    ``os.path.realpath`` gives up at PATH_MAX and leaves the rest of the path
    unresolved, so ``tarfile``'s filter judges ``escape`` by its text while the
    kernel follows it out of the destination.
    """
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - len(str(dest)) - 1) // (len(steps) + 1))
    members, path = [], ""
    for step in steps:
        members.append(member(os.path.join(path, component), tarfile.DIRTYPE, mode=0o777))
        members.append(member(os.path.join(path, step), tarfile.SYMTYPE, link=component))
        path = os.path.join(path, component)
    linkpath = os.path.join(*steps, "l" * 254)
    members.append(member(linkpath, tarfile.SYMTYPE, link=os.path.join(*[".."] * len(steps))))
    members.append(member("escape", tarfile.SYMTYPE, link=os.path.join(linkpath, "..", "outside")))
    members.append(member("flaglink", tarfile.LNKTYPE, link="escape/flag"))
    members.append(member("flaglink", content=b"overwritten"))
    members.append(member("escape/newfile", content=b"new"))
    return archive(*members)


def test_the_cve_2025_4517_archive_writes_nothing_outside_and_names_the_first_bad_member(tmp_path, sentinel):
    _, untouched = sentinel
    dest = tmp_path / "dest"
    data = cve_2025_4517_archive(dest)
    with pytest.raises(SnapshotError, match=r"'a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/l+' is below 'a', which is a link"):
        check_archive(data, LIMITS)
    with pytest.raises(SnapshotError, match="which is a link"):
        unpack(data, dest, LIMITS)
    untouched()


ESCAPES = {
    "link_to_parent_then_a_file_through_it": (
        [member("up", tarfile.SYMTYPE, link=".."), member("up/outside/flag", content=b"overwritten")],
        "'up' is a link to '..', outside"),
    "a_dotdot_member": ([member("a/../../outside/flag", content=b"overwritten")], "points outside"),
    "an_absolute_member": ([member("{outside}/flag", content=b"overwritten")], "points outside"),
    "a_hard_link_to_etc_passwd": ([member("passwd", tarfile.LNKTYPE, link="/etc/passwd")],
                                  "hard link to '/etc/passwd', which is not a file earlier"),
    "a_hard_link_outside_then_writing_it": (
        [member("flag", tarfile.LNKTYPE, link="{outside}/flag"), member("flag", content=b"overwritten")],
        "is a hard link to"),
    "an_absolute_link_to_a_folder_then_a_file_below": (
        [member("d", tarfile.SYMTYPE, link="{outside}"), member("d/flag", content=b"overwritten")],
        "'d' is a link to '.*outside', outside"),
    "a_link_inside_then_a_file_below_it": (
        [member("sub", tarfile.DIRTYPE), member("d", tarfile.SYMTYPE, link="sub"), member("d/x", content=b"x")],
        "'d/x' is below 'd', which is a link"),
    "a_file_below_a_file": ([member("f", content=b"x"), member("f/x", content=b"x")], "below 'f', which is a file"),
    "links_that_look_inside_but_lead_out": (
        # each lexically inside; followed, sub/up is the top, so sub/out is its parent
        [member("sub/up", tarfile.SYMTYPE, link=".."), member("sub/out", tarfile.SYMTYPE, link="up/..")],
        "'sub/out' is a link to 'up/..', which leads outside"),
    "a_link_loop": ([member("x", tarfile.SYMTYPE, link="y"), member("y", tarfile.SYMTYPE, link="x")],
                    "in a loop"),
    "a_name_given_twice": ([member("x", content=b"x"), member("x", tarfile.SYMTYPE, link="y")], "appears twice"),
    "a_fifo": ([member("pipe", tarfile.FIFOTYPE)], "not a regular file or folder"),
    "a_device": ([member("disk", tarfile.BLKTYPE)], "not a regular file or folder"),
}


@pytest.mark.parametrize("case", ESCAPES)
def test_an_archive_reaching_outside_is_refused_whole_and_writes_nothing_outside(tmp_path, sentinel, case):
    outside, untouched = sentinel
    members, message = ESCAPES[case]
    for info, _ in members:
        info.name = info.name.format(outside=outside)
        info.linkname = info.linkname.format(outside=outside)
    passwd = open("/etc/passwd", "rb").read()
    data = archive(*members)
    with pytest.raises(SnapshotError, match=message):
        check_archive(data, LIMITS)
    with pytest.raises(SnapshotError, match=message):
        unpack(data, tmp_path / "dest", LIMITS)
    untouched()
    assert open("/etc/passwd", "rb").read() == passwd


def test_unpacked_entries_are_private_whatever_modes_and_owners_the_archive_claims(tmp_path):
    tool, _ = member("bin/tool", content=b"#!/bin/sh\n", mode=0o6755)
    tool.uid, tool.gid = 12345, 12345
    data = archive(member("bin", tarfile.DIRTYPE, mode=0o1777), (tool, b"#!/bin/sh\n"),
                   member("notes.txt", content=b"hi", mode=0o666), member("deep/er/file.py", content=b"x"))
    dest = tmp_path / "dest"
    assert unpack(data, dest, LIMITS) == len(b"#!/bin/sh\n") + 3
    modes = {p.relative_to(dest).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [dest, *dest.rglob("*")]}
    assert modes == {".": 0o700, "bin": 0o700, "bin/tool": 0o700, "notes.txt": 0o600, "deep": 0o700,
                     "deep/er": 0o700, "deep/er/file.py": 0o600}
    assert {p.lstat().st_uid for p in dest.rglob("*")} == {os.geteuid()}


def test_links_that_stay_inside_and_hard_links_to_earlier_files_are_unpacked(tmp_path):
    data = archive(member("./", tarfile.DIRTYPE), member("pkg/m.py", content=b"X = 1"),
                   member("lib", tarfile.SYMTYPE, link="pkg"), member("pkg/sub/top", tarfile.SYMTYPE, link="../.."),
                   member("copy.py", tarfile.LNKTYPE, link="./pkg/m.py"), member("later", tarfile.SYMTYPE, link="x/y"))
    dest = tmp_path / "dest"
    unpack(data, dest, LIMITS)
    assert (dest / "lib" / "m.py").read_text() == "X = 1"
    assert os.readlink(dest / "pkg/sub/top") == "../.." and (dest / "pkg/sub/top/copy.py").read_text() == "X = 1"
    assert os.path.samefile(dest / "copy.py", dest / "pkg/m.py")
    assert os.readlink(dest / "later") == "x/y"


# ---------------------------------------------------------------------- bombs
@pytest.fixture
def inflated(monkeypatch):
    """How many bytes zlib has decompressed so far, in this module's code or in tarfile's and gzip's."""
    counted = [0]
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *args, **kwargs):
            self._real = real(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self._real.decompress(data, max_length)
            counted[0] += len(out)
            return out

        def flush(self, *args):
            out = self._real.flush(*args)
            counted[0] += len(out)
            return out

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    return counted


def zeros_gzip(megabytes: int) -> bytes:
    """``megabytes`` MiB of zeros as concatenated gzip members: about 1 KiB each."""
    return gzip.compress(bytes(1024**2), compresslevel=9) * megabytes


def test_a_gzip_of_zeros_claiming_gigabytes_is_refused_after_decompressing_less_than_the_limit(inflated):
    header = tarfile.TarInfo("weights.bin")
    header.size = 8 * 1024**3
    data = gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)) + zeros_gzip(8 * 1024)
    assert len(data) < 10 * 1024**2
    with pytest.raises(SnapshotError, match=r"unpacks to more than 1000000 bytes.*'weights.bin'"):
        check_archive(data, LIMITS)
    assert inflated[0] <= LIMITS.max_unpacked_bytes


def test_members_adding_up_past_the_limit_stop_decompression_at_the_limit(inflated):
    data = archive(*[member(f"part{i}", content=bytes(300_000)) for i in range(20)])
    with pytest.raises(SnapshotError, match=r"unpacks to more than 1000000 bytes.*'part3'"):
        check_archive(data, LIMITS)
    assert inflated[0] <= LIMITS.max_unpacked_bytes + 128 * 1024


def test_many_tiny_members_are_refused_once_their_headers_pass_the_limit(inflated):
    limits = SnapshotLimits(10**6, max_header_bytes=64 * 1024)
    data = archive(*[member(f"f{i}") for i in range(1000)], fmt=tarfile.USTAR_FORMAT)
    with pytest.raises(SnapshotError, match=r"headers take more than 65536 bytes \(at the member after 'f127'\)"):
        check_archive(data, limits)
    assert inflated[0] <= 2 * limits.max_header_bytes + 10240


def test_a_header_claiming_a_gigabyte_is_refused_without_reading_it(inflated):
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 1024**3
    data = gzip.compress(pax.tobuf(format=tarfile.USTAR_FORMAT)) + zeros_gzip(1024)
    with pytest.raises(SnapshotError, match="the first member has headers larger than 65536 bytes"):
        check_archive(data, LIMITS)
    assert inflated[0] <= 128 * 1024


def test_data_after_the_end_of_the_archive_is_never_decompressed(inflated):
    data = archive(member("train.py", content=b"print(1)")) + zeros_gzip(1024)
    assert [m.name for m in check_archive(data, LIMITS)] == ["train.py"]
    assert inflated[0] <= 128 * 1024


def test_an_unpack_refused_halfway_leaves_no_destination(tmp_path):
    data = archive(member("a.py", content=b"x"), member("big", content=bytes(2 * 10**6)))
    with pytest.raises(SnapshotError, match="unpacks to more than"):
        unpack(data, tmp_path / "dest", LIMITS)
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz", "w"])
def test_other_compressions_and_plain_tar_unpack_too(tmp_path, mode):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        info, content = member("train.py", content=b"print(1)")
        tar.addfile(info, io.BytesIO(content))
    unpack(buf.getvalue(), tmp_path / "dest", LIMITS)
    assert (tmp_path / "dest" / "train.py").read_bytes() == b"print(1)"


def test_a_truncated_archive_is_not_readable():
    with pytest.raises(SnapshotError, match="not a readable"):
        check_archive(archive(member("train.py", content=bytes(100_000)))[:-200], LIMITS)


# ---------------------------------------------------------------------- root's work in a user's run folder
A_USER = 54321  # any uid: root may hand files to an account that does not exist


def run_folder(tmp_path) -> RunPaths:
    paths = RunPaths(tmp_path / "runs" / "3")
    create_run_dir(str(paths.root), archive(member("train.py", content=b"x")), "train.py", LIMITS)
    return paths


def test_handing_over_checkpoints_links_each_file_keeps_owners_and_never_follows_a_link(tmp_path):
    paths = run_folder(tmp_path)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("root's")
    (paths.checkpoints / "step1.ckpt").write_bytes(b"1")
    (paths.checkpoints / "sub").mkdir()
    (paths.checkpoints / "sub" / "step2.ckpt").write_bytes(b"2")
    os.chown(paths.checkpoints / "sub", A_USER, A_USER)
    (paths.checkpoints / "out").symlink_to(secret)  # what a run could leave behind
    hand_over_checkpoints(str(paths.root))
    given = paths.checkpoint_input
    assert os.path.samefile(given / "step1.ckpt", paths.checkpoints / "step1.ckpt")
    assert os.path.samefile(given / "sub" / "step2.ckpt", paths.checkpoints / "sub" / "step2.ckpt")
    assert (given / "sub").stat().st_uid == A_USER
    assert os.readlink(given / "out") == str(secret) and (secret / "key").stat().st_nlink == 1
    assert not (paths.root / "checkpoint-input.next").exists()


def test_handing_a_run_folder_to_its_user_changes_nothing_reached_through_a_link(tmp_path):
    paths = run_folder(tmp_path)
    roots = tmp_path / "roots"
    roots.write_text("root's")
    (paths.model / "soft").symlink_to(roots)
    os.link(roots, paths.model / "hard")
    (paths.model / "sub").mkdir()
    (paths.model / "sub" / "weights.bin").write_bytes(b"")
    give_to_user(str(paths.root), A_USER, A_USER)
    assert roots.stat().st_uid == 0 and paths.snapshot.stat().st_uid == 0
    assert {p.lstat().st_uid for p in [paths.root, paths.model / "soft", paths.model / "sub" / "weights.bin"]} == {
        A_USER}
    assert stat.S_IMODE(paths.root.stat().st_mode) == 0o700
