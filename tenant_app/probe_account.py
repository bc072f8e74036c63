"""The platform's probe account: an agency of its own, one budget line, one clerk granted only it.

The platform's probes (monitoring.probes) exercise the county through its address like a user. So
that a probe never changes what the county's users see, everything it touches belongs to this
agency, which no county user is granted: reports cover the caller's granted agencies only, numbers
are issued per agency, and the probe's 簽證 is refused by the balance check (it asks for more than
the line has), so it writes nothing. The probe's log-ins are in the audit log under its own name,
as every access should be.

`python -m tenant_app.probe_account` (settings from the environment) creates or refreshes it and
prints the account as JSON: a new password and API token each time (only hashes are stored).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tenant_app.auth import forget_cached_principals, issue_api_token
from tenant_app.enums import Role
from tenant_app.models import Agency, BudgetLine, FiscalYear, User, UserAgency
from tenant_app.security import passwords
from tenant_app.settings import Settings

PROBE_USERNAME = "cc-probe"
PROBE_AGENCY_CODE = "CC-PROBE"
PROBE_AGENCY_NAME = "平台監測 (探測專用)"
PROBE_LINE_BUDGET = 1_000  # never allotted: the probe's 簽證 asks for more than is available


@dataclass(frozen=True)
class ProbeAccount:
    username: str
    password: str
    api_token: str
    agency_id: int
    budget_line_id: int


def ensure_probe_account(db: Session, password: str | None = None) -> ProbeAccount:
    """Create (or refresh the password and token of) the probe account; the caller commits."""
    password = password or secrets.token_urlsafe(18)
    agency = db.scalars(select(Agency).where(Agency.code == PROBE_AGENCY_CODE)).one_or_none()
    if agency is None:
        agency = Agency(code=PROBE_AGENCY_CODE, name=PROBE_AGENCY_NAME)
        db.add(agency)
        db.flush()
    year = db.scalars(select(FiscalYear).order_by(FiscalYear.year.desc())).first()
    if year is None:
        raise LookupError("the county has no fiscal year yet: seed or migrate it first")
    line = db.scalars(select(BudgetLine).where(BudgetLine.agency_id == agency.id,
                                               BudgetLine.fiscal_year_id == year.id)).first()
    if line is None:
        line = BudgetLine(agency_id=agency.id, fiscal_year_id=year.id, programme_code="99",
                          programme_name="平台監測", sub_item="探測", object_code="2000",
                          object_name="業務費", is_personnel=False, budget=PROBE_LINE_BUDGET)
        db.add(line)
        db.flush()
    user = db.scalars(select(User).where(User.username == PROBE_USERNAME)).one_or_none()
    if user is None:
        user = User(username=PROBE_USERNAME, display_name="平台監測探針", role=Role.CLERK,
                    password_hash=passwords.hash_password(password))
        db.add(user)
        db.flush()
    else:
        user.password_hash = passwords.hash_password(password)
        user.active = True
    granted = set(db.scalars(select(UserAgency.agency_id).where(UserAgency.user_id == user.id)))
    for other in granted - {agency.id}:  # only its own agency, ever
        db.query(UserAgency).filter_by(user_id=user.id, agency_id=other).delete()
    if agency.id not in granted:
        db.add(UserAgency(user_id=user.id, agency_id=agency.id))
    token, _ = issue_api_token(db, user.id, actor="platform", name="probe")
    db.flush()
    forget_cached_principals()
    return ProbeAccount(PROBE_USERNAME, password, token, agency.id, line.id)


def main(settings: Settings | None = None) -> None:
    from tenant_app.db import make_engine, session_scope
    from tenant_app.settings import load_settings

    engine = make_engine((settings or load_settings()).database_url)
    try:
        with session_scope(engine) as db:
            print(json.dumps(asdict(ensure_probe_account(db))))
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
