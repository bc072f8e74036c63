"""A tiny county for auth tests: two agencies, one user per role, each granted only agency A."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tenant_app.db import Base, make_engine, session_factory
from tenant_app.enums import Role
from tenant_app.models import Agency, User, UserAgency
from tenant_app.security import passwords

PASSWORD = "correct horse 正確"


@dataclass
class Fixture:
    engine: Engine
    agency_a: int
    agency_b: int
    users: dict[Role, int]

    def session(self) -> Session:
        return session_factory(self.engine)()


def build(url: str) -> Fixture:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    digest = passwords.hash_password(PASSWORD)  # one argon2 hash shared: keeps the fixture fast
    with session_factory(engine)() as db:
        a = Agency(code="A01", name="甲機關")
        b = Agency(code="B01", name="乙機關")
        db.add_all([a, b])
        db.flush()
        users: dict[Role, int] = {}
        for role in Role:
            user = User(username=role.value, display_name=f"{role.value} 使用者", password_hash=digest,
                        role=role)
            db.add(user)
            db.flush()
            db.add(UserAgency(user_id=user.id, agency_id=a.id))
            users[role] = user.id
        db.commit()
        return Fixture(engine=engine, agency_a=a.id, agency_b=b.id, users=users)
