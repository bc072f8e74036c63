"""Gapless numbers per (agency, fiscal year, kind), issued inside the caller's transaction.

The counter row is bumped by an UPDATE, which locks it until the transaction ends: a rolled-back
transaction gives its numbers back, so no gap can appear, and two writers cannot get one number.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from tenant_app.enums import NumberKind
from tenant_app.services import rawsql
from tenant_app.services.ids import connection_of

_BUMP = ("UPDATE number_counter SET last_number = last_number + :count WHERE agency_id = :agency_id "
         "AND fiscal_year_id = :fiscal_year_id AND kind = :kind RETURNING last_number")
_CREATE = ("INSERT INTO number_counter (agency_id, fiscal_year_id, kind, last_number) "
           "VALUES (:agency_id, :fiscal_year_id, :kind, 0) ON CONFLICT DO NOTHING")


def issue_numbers(db: Connection | Session, agency_id: int, fiscal_year_id: int, kind: NumberKind,
                  count: int = 1) -> range:
    """Reserve `count` consecutive numbers and return them."""
    conn = connection_of(db)
    params = {"agency_id": agency_id, "fiscal_year_id": fiscal_year_id, "kind": kind.value, "count": count}
    last = rawsql.execute(conn, _BUMP, params).scalar_one_or_none()
    if last is None:
        # First number of this sequence: create the row (a concurrent creator is harmless), bump again.
        rawsql.execute(conn, _CREATE, params)
        last = rawsql.execute(conn, _BUMP, params).scalar_one()
    return range(last - count + 1, last + 1)
