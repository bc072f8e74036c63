"""A county's figures, recorded with each restore point and compared after a restore.

Computed with sqlite3 from a copy of the tenant app's database (backup may not import tenant_app:
DESIGN.md's import rule). The app's table and column names are read in the queries below and nowhere
else in backup/.

Where they are kept: as restic tags on the database's own snapshot (`fig-vouchers=1234`, ...).
Tags travel with the snapshot through `restic copy` and are removed with it by `forget`, so a
restore point and its figures can never be separated or paired wrongly (a separate JSON snapshot
would need its own pairing, and `forget --group-by host,tags` would keep or drop it apart from its
database). `restic snapshots` lists them without reading any data, so the operator's list of restore
points costs nothing more. Tags are short, so per-line totals are kept as a digest (with the grand
total); the full per-line table is in the backup job's step result, for a mismatch to be explained.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from backup.platformdb import CopyCheck, check_sqlite
from inventory.jobs import StepResult

# The tenant app's schema as these figures read it (tenant_app/models.py).
_VOUCHER_COUNT = "SELECT count(*) FROM payment_voucher"
_CERTIFIED_PER_LINE = "SELECT id, certified FROM budget_line ORDER BY id"
_JOURNAL_TOTALS = "SELECT coalesce(sum(debit), 0), coalesce(sum(credit), 0) FROM journal_line"
_UNBALANCED_ENTRIES = ("SELECT count(*) FROM (SELECT entry_id FROM journal_line GROUP BY entry_id "
                       "HAVING sum(debit) != sum(credit))")

TAG_PREFIX = "fig-"


class FiguresError(RuntimeError):
    """The figures could not be read (not the app's database, or a damaged one)."""


class Figures(StepResult):
    vouchers: int
    certified_per_line: dict[str, int]  # budget_line id -> certified total (JSON keys are text)
    debits: int
    credits: int
    unbalanced_entries: int

    @property
    def journal_balanced(self) -> bool:
        return self.debits == self.credits and self.unbalanced_entries == 0

    @property
    def certified_total(self) -> int:
        return sum(self.certified_per_line.values())

    def lines_digest(self) -> str:
        text = "\n".join(f"{line}:{amount}" for line, amount in sorted(self.certified_per_line.items(),
                                                                        key=lambda item: int(item[0])))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        """What a restore point carries (and all a comparison needs)."""
        return {
            "vouchers": str(self.vouchers),
            "certified": str(self.certified_total),
            "lines": self.lines_digest(),
            "journal": "balanced" if self.journal_balanced else "unbalanced",
        }

    def summary(self) -> str:
        journal = "balanced" if self.journal_balanced else f"UNBALANCED ({self.unbalanced_entries} entries)"
        return (f"{self.vouchers} vouchers, {len(self.certified_per_line)} budget lines certified "
                f"{self.certified_total}, journal {journal}")


def read(database: Path) -> Figures:
    """The figures of a SQLite copy of the app's database (opened read-only)."""
    if not database.is_file():
        raise FiguresError(f"{database}: no such database file")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            vouchers = connection.execute(_VOUCHER_COUNT).fetchone()[0]
            lines = {str(line): int(amount) for line, amount in connection.execute(_CERTIFIED_PER_LINE)}
            debits, credits = connection.execute(_JOURNAL_TOTALS).fetchone()
            unbalanced = connection.execute(_UNBALANCED_ENTRIES).fetchone()[0]
    except sqlite3.Error as error:
        raise FiguresError(f"{database}: {error}") from error
    return Figures(vouchers=int(vouchers), certified_per_line=lines, debits=int(debits), credits=int(credits),
                   unbalanced_entries=int(unbalanced))


def read_checked(database: Path) -> Figures:
    """quick_check and the figures of one staged copy at once (~0.25 s and ~0.2 s for a year of a
    county): sqlite3 lets go of the GIL while it steps, so on a free core the two readers overlap.
    A damaged copy is reported as such (PlatformDbError) before any FiguresError it also causes."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        checked = pool.submit(check_sqlite, database, CopyCheck.QUICK)
        try:
            found = read(database)
        except FiguresError:
            checked.result()
            raise
        checked.result()
    return found


def to_tags(figures: Figures) -> list[str]:
    return [f"{TAG_PREFIX}{key}={value}" for key, value in figures.tags().items()]


def from_tags(tags: Iterable[str]) -> dict[str, str]:
    """The figures a snapshot recorded ({} when it has none)."""
    return {tag[len(TAG_PREFIX):].split("=", 1)[0]: tag.split("=", 1)[1]
            for tag in tags if tag.startswith(TAG_PREFIX) and "=" in tag}


def differences(recorded: dict[str, str], found: Figures) -> list[str]:
    """What differs between the figures recorded with a restore point and those of its restored copy;
    empty when they agree. A restore point without recorded figures cannot be proven."""
    if not recorded:
        return ["the restore point recorded no figures"]
    now = found.tags()
    return [f"{key}: recorded {recorded.get(key)}, restored {now[key]}"
            for key in sorted(now) if recorded.get(key) != now[key]]
