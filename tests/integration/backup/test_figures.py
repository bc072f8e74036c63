"""Figures of a database made by the app itself (`python -m tenant_app migrate` then `generate`)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from backup import figures


def test_figures_of_a_generated_county(county_db: Path) -> None:
    found = figures.read(county_db)
    with sqlite3.connect(county_db) as db:
        # independent reads through the app's schema: what the figures must agree with
        certified = db.execute(
            "SELECT coalesce(sum(amount - released_amount), 0) FROM certification").fetchone()[0]
        lines = db.execute("SELECT count(*) FROM budget_line").fetchone()[0]
    assert found.vouchers == 60
    assert len(found.certified_per_line) == lines > 0
    assert found.certified_total > 0
    assert found.certified_total == certified
    assert found.journal_balanced and found.debits == found.credits > 0
    assert figures.differences(figures.from_tags(figures.to_tags(found)), found) == []


def test_a_changed_database_shows_in_its_figures(county_db: Path, tmp_path: Path) -> None:
    before = figures.read(county_db)
    changed = tmp_path / "changed.db"
    shutil.copy(county_db, changed)
    with sqlite3.connect(changed) as db:
        db.execute("DELETE FROM payment_voucher WHERE id = (SELECT max(id) FROM payment_voucher)")
        line = db.execute("SELECT min(id) FROM budget_line").fetchone()[0]
        db.execute("UPDATE budget_line SET certified = certified + 1 WHERE id = ?", (line,))
        entry = db.execute("SELECT min(id) FROM journal_line WHERE debit > 0").fetchone()[0]
        # the app's triggers forbid changing posted lines: the damage a backup must reveal bypasses them
        for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                     "AND tbl_name = 'journal_line'").fetchall():
            db.execute(f'DROP TRIGGER "{trigger}"')
        db.execute("UPDATE journal_line SET debit = debit + 5 WHERE id = ?", (entry,))
    after = figures.read(changed)
    diff = figures.differences(figures.from_tags(figures.to_tags(before)), after)
    assert {d.split(":")[0] for d in diff} == {"vouchers", "certified", "lines", "journal"}
    assert not after.journal_balanced and after.unbalanced_entries == 1


def test_not_the_apps_database_is_an_error(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(figures.FiguresError, match="no such table"):
        figures.read(other)
    with pytest.raises(figures.FiguresError, match="no such database"):
        figures.read(tmp_path / "missing.db")


def test_read_checked_gives_the_figures_of_a_sound_copy_and_refuses_a_damaged_one(
        county_db: Path, tmp_path: Path) -> None:
    from backup.platformdb import PlatformDbError

    assert figures.read_checked(county_db) == figures.read(county_db)
    damaged = tmp_path / "damaged.db"
    shutil.copy(county_db, damaged)
    with sqlite3.connect(damaged) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'journal_line'").fetchone()[0]
    with damaged.open("r+b") as image:  # the journal's table b-tree page overwritten
        image.seek((root - 1) * page_size)
        image.write(b"\xff" * page_size)
    # the check's verdict, not whatever the figures' queries make of the damage
    with pytest.raises(PlatformDbError, match="quick_check"):
        figures.read_checked(damaged)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(figures.FiguresError, match="no such table"):  # sound, but not the app's
        figures.read_checked(other)
