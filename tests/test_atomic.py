"""Every kept file is written whole or not at all (dcpt_law._atomic), and the runner's loss table with it."""
import os
import stat

import pandas as pd
import pytest

from dcpt_law._atomic import atomic_path, atomic_write


def test_atomic_write_writes_text_and_bytes_readable_by_all_and_leaves_no_temporary(tmp_path):
    atomic_write(tmp_path / "a.json", '{"x": "é"}')
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{"x": "é"}'
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_a_write_that_fails_half_way_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "losses.csv"
    path.write_text("old\n")
    with pytest.raises(OSError, match="no space"):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise OSError("no space left on device")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["losses.csv"]


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    path = tmp_path / "fit.json"
    with atomic_path(path) as a, atomic_path(path) as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_text("first")
        b.write_text("second")
    assert path.read_text() == "first"  # the outer block ends last: its file is the one kept


def test_the_loss_table_survives_a_crash_while_rows_are_appended(tmp_path, monkeypatch):
    from small_runs.sweeps import append_rows

    path = tmp_path / "losses.csv"
    append_rows(path, [{"domain": "code", "domain_loss": 4.5}])
    before = path.read_text()

    def crash(self, target, **kw):  # the disk fills up half-way through the new table
        open(target, "w").write("domain,domain_lo")
        raise OSError("no space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(OSError, match="no space"):
        append_rows(path, [{"domain": "law", "domain_loss": 5.0}])
    assert path.read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
