"""Gapless numbers per (agency, fiscal year, kind), issued inside the caller's transaction.

The counter row is bumped by an UPDATE, which locks it until the transaction ends: a rolled-back
transaction gives its numbers back, so no gap can appear, and two writers cannot get one number.
"""

from __future__ import annotations

from sqlalchemy import Connection, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tenant_app.enums import NumberKind
from tenant_app.models import NumberCounter


def issue_numbers(db: Connection | Session, agency_id: int, fiscal_year_id: int, kind: NumberKind,
                  count: int = 1) -> range:
    """Reserve `count` consecutive numbers and return them."""
    bump = (
        update(NumberCounter)
        .where(NumberCounter.agency_id == agency_id, NumberCounter.fiscal_year_id == fiscal_year_id,
               NumberCounter.kind == kind)
        .values(last_number=NumberCounter.last_number + count)
        .returning(NumberCounter.last_number)
    )
    last = db.execute(bump).scalar_one_or_none()
    if last is None:
        # First number of this sequence: create the row (a concurrent creator is harmless), bump again.
        dialect = db.get_bind().dialect.name if isinstance(db, Session) else db.dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        db.execute(insert(NumberCounter).values(agency_id=agency_id, fiscal_year_id=fiscal_year_id, kind=kind,
                                                last_number=0).on_conflict_do_nothing())
        last = db.execute(bump).scalar_one()
    return range(last - count + 1, last + 1)
