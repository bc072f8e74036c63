"""The change log (NetBox's journal): every change to an inventory object, who made it and when.

Writers call `record` in the same transaction as the change itself, so a rolled-back change leaves
no entry and a committed one always has its entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inventory.enums import ChangeAction, ObjectKind
from inventory.models import ChangeLogEntry


def jsonable(value: Any) -> Any:
    """A JSON-storable copy of `value` (enums as their value, datetimes as ISO text)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def record(
    session: Session,
    *,
    actor: str,
    kind: ObjectKind,
    name: str,
    action: ChangeAction,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    note: str = "",
) -> ChangeLogEntry:
    entry = ChangeLogEntry(
        actor=actor,
        object_kind=kind,
        object_name=name,
        action=action,
        before=jsonable(before) if before is not None else None,
        after=jsonable(after) if after is not None else None,
        note=note,
    )
    session.add(entry)
    return entry


def history(
    session: Session, kind: ObjectKind | None = None, name: str | None = None, limit: int = 100
) -> list[ChangeLogEntry]:
    """The newest entries first, optionally for one kind and/or one object."""
    query = select(ChangeLogEntry).order_by(ChangeLogEntry.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(ChangeLogEntry.object_kind == kind)
    if name is not None:
        query = query.where(ChangeLogEntry.object_name == name)
    return list(session.scalars(query))
