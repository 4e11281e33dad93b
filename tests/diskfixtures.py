"""Real disk faults for tests: a small tmpfs that fills up, a folder made read-only (a read-only remount as root,
whom file modes do not stop; chmod for anyone else), a page of a database overwritten."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

_MOUNTED: set[Path] = set()  # only these are ever remounted: never a real file system


@contextmanager
def small_disk(where: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at where/disk (skips where mounting is not allowed)."""
    mnt = where / "disk"
    mnt.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    _MOUNTED.add(mnt.resolve())
    try:
        yield mnt
    finally:
        _MOUNTED.discard(mnt.resolve())
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the disk holding `disk` with one file until at most `leave` bytes are free; returns the filler."""
    filler = disk / "filler.bin"
    chunk = b"\1" * (1 << 20)
    with open(filler, "ab") as f:
        while True:
            free = shutil.disk_usage(disk).free
            if free <= leave:
                break
            try:
                f.write(chunk[: max(min(len(chunk), free - leave), 1)])
                f.flush()
            except OSError:
                break
    return filler


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder and its files become unwritable for this process: a read-only remount of a tmpfs at `folder`'s
    mount point as root, chmod otherwise."""
    if os.geteuid() == 0:
        mnt = _mount_point(folder)
        if mnt not in _MOUNTED:
            pytest.skip(f"{folder} is not on a small_disk: as root only a test tmpfs can be made read-only")
        if subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode:
            pytest.skip(f"cannot remount {mnt} read-only")
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
        return
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield
    finally:
        for p, m in modes.items():
            with suppress(OSError):
                p.chmod(m)


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


def damage_page(db: Path, page: int, size: int = 4096) -> None:
    """Overwrite one page of a database file with a pattern that is no valid b-tree page."""
    with open(db, "r+b") as f:
        f.seek(page * size)
        f.write(bytes([0xA5, 0x5A] * (size // 2)))


def table_page(db: Path, table: str) -> int:
    """The 0-based file page of a table's root (a leaf, for a small table)."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]) - 1
    finally:
        conn.close()


def first_leaf_page(db: Path, table: str, size: int = 4096) -> int:
    """The 0-based file page of a table's first leaf (the left-most child of its root, for a table of two levels):
    damage there and the table's first rows cannot be read, its later ones can."""
    import struct

    root = table_page(db, table)
    with open(db, "rb") as f:
        f.seek(root * size)
        page = f.read(size)
    assert page[0] == 0x05, "the table's root is not an interior page: give it more rows"
    first_cell = struct.unpack(">H", page[12:14])[0]
    return struct.unpack(">I", page[first_cell:first_cell + 4])[0] - 1
