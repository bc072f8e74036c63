"""A small county built through the application's own services, for signing, treasury and report tests.

Owned by engineer B (signing, treasury, audit, reports). Certifications, vouchers, payments and
journal entries go through engineer A's services, so the reports are checked against data the
application really writes, not against numbers this helper made up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tenant_app import signing_store
from tenant_app.db import Base, session_scope
from tenant_app.enums import Role
from tenant_app.models import Agency, BudgetLine, County, Delegation, FiscalYear, User, UserAgency
from tenant_app.rules.vouchers import VoucherLineData
from tenant_app.services import budget, vouchers
from tenant_app.services.certification import CertifyRequest, commit_group
from tenant_app.services.chart import ensure_reference_data
from tenant_app.services.posting import load_rule_book

SECRET = "integration-test-secret"
YEAR = 2026
SIGNED_AT = dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC)
PAID_ON = dt.date(2026, 3, 12)


@dataclass
class County_:
    agency_id: int = 0
    other_agency_id: int = 0
    year_id: int = 0
    users: dict[str, int] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)


def build(engine: Engine) -> County_:
    """基隆市 with one agency, users for every signing role, three budget lines with allotments."""
    Base.metadata.create_all(engine)
    ids = County_()
    with session_scope(engine) as s:
        ensure_reference_data(s)
        s.add(County(code="keelung", name="基隆市"))
        year = FiscalYear(year=YEAR)
        agency = Agency(code="A01", name="基隆市政府主計處")
        other = Agency(code="A02", name="基隆市政府工務處")
        s.add_all([year, agency, other])
        s.flush()
        ids.agency_id, ids.other_agency_id, ids.year_id = agency.id, other.id, year.id
        people = {
            "clerk": ("陳承辦", Role.CLERK, agency.id),
            "clerk2": ("張承辦", Role.CLERK, agency.id),
            "chief": ("林主計", Role.CHIEF_ACCOUNTANT, agency.id),
            "head": ("王首長", Role.AGENCY_HEAD, agency.id),
            "deputy": ("李代理", Role.ACCOUNTANT, agency.id),
            "other_chief": ("吳主計", Role.CHIEF_ACCOUNTANT, other.id),
        }
        for username, (name, role, agency_id) in people.items():
            user = User(username=username, display_name=name, password_hash="x", role=role)
            s.add(user)
            s.flush()
            s.add(UserAgency(user_id=user.id, agency_id=agency_id))
            ids.users[username] = user.id
        s.add(
            Delegation(
                principal_id=ids.users["head"],
                delegate_id=ids.users["deputy"],
                valid_from=dt.date(2026, 3, 1),
                valid_to=dt.date(2026, 3, 15),
                reason="首長公出",
            )
        )
        specs = [
            ("P01", "一般行政", "行政管理", "1000", "人事費", True, 1_200_000),
            ("P01", "一般行政", "行政管理", "2000", "業務費", False, 800_000),
            ("P02", "道路養護", "道路維修", "3000", "設備及投資", False, 5_000_000),
        ]
        for prog, prog_name, sub, obj, obj_name, personnel, amount in specs:
            line = BudgetLine(
                agency_id=agency.id,
                fiscal_year_id=year.id,
                programme_code=prog,
                programme_name=prog_name,
                sub_item=sub,
                object_code=obj,
                object_name=obj_name,
                is_personnel=personnel,
                budget=amount,
            )
            s.add(line)
            s.flush()
            ids.lines.append(line.id)
        s.flush()
        for line_id, (*_, amount) in zip(ids.lines, specs, strict=True):
            # Allot a quarter in each of periods 1..4; all reached by year end.
            for period in range(1, 5):
                budget.allot(s, line_id, period, amount // 4, on=dt.date(2026, 12, 31))
    return ids


def certify(engine: Engine, line_id: int, amount: int, period: int) -> int:
    with session_scope(engine) as s:
        outcome = commit_group(
            s.connection(),
            load_rule_book(s),
            [CertifyRequest(line_id, amount, None, period=period, entry_date=dt.date(YEAR, period, 5))],
        )[0]
        assert outcome.accepted, outcome.errors
        assert outcome.certification_id is not None
        return outcome.certification_id


def prepare_voucher(
    s: Session,
    ids: County_,
    lines: list[tuple[int, int]],
    *,
    period: int = 3,
    certification_id: int | None = None,
    invoice: str | None = None,
    payee: str = "大同文具行",
) -> int:
    total = sum(amount for _, amount in lines)
    voucher = vouchers.create_voucher(
        s,
        agency_id=ids.agency_id,
        payee=payee,
        amount=total,
        period=period,
        lines=[VoucherLineData(line_id, amount, "採購") for line_id, amount in lines],
        einvoices=[invoice] if invoice else [],
        certification_id=certification_id,
        payee_account="004-123456789012",
        preparer_id=ids.users["clerk"],
    )
    return voucher.id


def approve(s: Session, ids: County_, voucher_id: int) -> None:
    for who in ("clerk", "chief", "head"):
        signing_store.sign_voucher(s, voucher_id, ids.users[who], SECRET, at=SIGNED_AT)


def pay(s: Session, ids: County_, voucher_id: int) -> None:
    errors = signing_store.verify_voucher(s, voucher_id)
    assert errors == [], errors
    vouchers.pay_voucher(s, voucher_id, [], user_id=ids.users["chief"], on=PAID_ON)


def populate(engine: Engine, ids: County_) -> dict[str, int]:
    """A mix the execution report must get right: certified and paid, certified and partly released,
    paid directly, approved but unpaid, and a later-period payment. Returns the voucher ids."""
    office, roads = ids.lines[1], ids.lines[2]
    cert_paid = certify(engine, office, 120_000, 2)
    cert_released = certify(engine, roads, 1_000_000, 3)
    cert_open = certify(engine, roads, 300_000, 4)
    made: dict[str, int] = {}
    with session_scope(engine) as s:
        made["certified"] = prepare_voucher(
            s, ids, [(office, 100_000)], period=3, certification_id=cert_paid, invoice="AB12345678"
        )
        made["direct"] = prepare_voucher(
            s, ids, [(office, 25_000), (office, 5_000)], period=3, invoice="CD12345678", payee="中華電信"
        )
        made["roads"] = prepare_voucher(s, ids, [(roads, 600_000)], period=3, certification_id=cert_released)
        made["later"] = prepare_voucher(s, ids, [(office, 7_000)], period=5)
        made["unpaid"] = prepare_voucher(s, ids, [(office, 9_000)], period=3)
        for key in ("certified", "direct", "roads", "later", "unpaid"):
            approve(s, ids, made[key])
        for key in ("certified", "direct", "roads", "later"):
            pay(s, ids, made[key])
        vouchers.release_certification(
            s, cert_released, 150_000, user_id=ids.users["chief"], on=dt.date(2026, 3, 20)
        )
    made["cert_open"] = cert_open
    return made
