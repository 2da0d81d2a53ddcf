"""What the magic takes along from the notebook's folder, and the archive checks on the service side."""

import io
import os
import tarfile

import pytest

from nothing.magics.snapshot import SnapshotTooLarge, build_snapshot, collect_files
from nothing.scheduler.snapshot import SnapshotError, SnapshotLimits, check_archive, unpack


def names(root):
    return sorted(rel for rel, _ in collect_files(root)[0])


def test_default_ignores_and_nothingignore(tmp_path):
    for rel in ["train.py", "data/a.csv", "data/raw/b.bin", ".ipynb_checkpoints/x.ipynb", "__pycache__/m.pyc",
                "logs/run.log", "keep.log", "sub/notes.txt", "top.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".nothingignore").write_text("# comment\ndata/raw/\n*.log\n!keep.log\n/top.txt\n")
    assert names(tmp_path) == [".nothingignore", "data/a.csv", "keep.log", "sub/notes.txt", "train.py"]


def test_links_pointing_outside_are_left_out(tmp_path):
    (tmp_path / "train.py").write_text("x")
    (tmp_path / "inside").symlink_to("train.py")
    (tmp_path / "outside").symlink_to("/etc/passwd")
    (tmp_path / "dirlink").symlink_to("/etc")
    files, skipped = collect_files(tmp_path)
    assert sorted(rel for rel, _ in files) == ["inside", "train.py"]
    assert sorted(skipped) == ["dirlink", "outside"]


def test_oversized_folder_names_the_biggest_files(tmp_path):
    (tmp_path / "weights.bin").write_bytes(os.urandom(3000))
    (tmp_path / "t.py").write_text("x")
    with pytest.raises(SnapshotTooLarge, match=r"largest: weights.bin .*\.nothingignore"):
        build_snapshot(tmp_path, max_bytes=2000)


def test_cell_code_becomes_the_entry_point(tmp_path):
    (tmp_path / "helper.py").write_text("X = 1")
    data, _ = build_snapshot(tmp_path, 10**6, cell_code="import helper")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.extractfile("nothing_cell.py").read() == b"import helper"
        assert sorted(tar.getnames()) == ["helper.py", "nothing_cell.py"]


def test_unpack_round_trip_and_refuses_existing_destination(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("print(1)")
    (tmp_path / "src" / "link").symlink_to("a.py")
    data, _ = build_snapshot(tmp_path / "src", 10**6)
    dest = tmp_path / "out"
    unpack(data, dest, SnapshotLimits(10**6))
    assert (dest / "a.py").read_text() == "print(1)" and os.readlink(dest / "link") == "a.py"
    with pytest.raises(FileExistsError):
        unpack(data, dest, SnapshotLimits(10**6))


def test_too_many_members_is_refused_at_the_first_member_over_the_limit():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(5):
            info = tarfile.TarInfo(f"f{i}")
            tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(SnapshotError, match="has more than 3 files; the limit is 3 \\(reached at 'f3'\\)"):
        check_archive(buf.getvalue(), SnapshotLimits(10**6, max_members=3))
