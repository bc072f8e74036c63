"""The declared domains at the edge, the request limits and the bounded error bodies (issue 14)."""

from __future__ import annotations

import json

import pytest
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from tenant_app.api.errors import MAX_ERROR_BODY, bounded, error_body, validation_error
from tenant_app.api.fastpath import parse
from tenant_app.api.limits import is_json_media_type, json_depth_exceeds
from tenant_app.domains import AMOUNT, ID, ID_MAX, MONEY_MAX, PERIOD, Amount, DomainError, Id, IdParam, Period
from tenant_app.rules.errors import ErrorCode, RuleError
from tenant_app.rules.journal import check_close
from tenant_app.services.certification import CertifyRequest
from tenant_app.services.certify_writer import out_of_domain
from tenant_app.web.forms import FormError, parse_money, parse_optional_int


class Body(BaseModel):
    id: Id
    amount: Amount
    period: Period | None = None


class Params(BaseModel):
    id: IdParam


@pytest.mark.parametrize(("value", "code"), [
    ("2", "not_integer"), (2.0, "not_integer"), (True, "not_integer"), (None, "not_integer"),
    (0, "id_out_of_range"), (ID_MAX + 1, "id_out_of_range"), (2**63, "id_out_of_range"),
])
def test_json_ids_are_strict_and_bounded(value: object, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"id": value, "amount": 1})
    assert [e["type"] for e in caught.value.errors()] == [code]


@pytest.mark.parametrize(("value", "code"), [
    (0, "money_not_positive"), (-1, "money_not_positive"), (MONEY_MAX + 1, "money_out_of_range"),
    (2**62, "money_out_of_range"), (float("nan"), "money_not_integer"), (float("inf"), "money_not_integer"),
])
def test_money_is_positive_and_at_most_the_bound(value: object, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"id": 1, "amount": value})
    assert [e["type"] for e in caught.value.errors()] == [code]
    assert Body.model_validate({"id": ID_MAX, "amount": MONEY_MAX, "period": 13}).amount == MONEY_MAX


@pytest.mark.parametrize("text", ["2.0", "+2", " 2", "1_000", "２", "9" * 30, "", "0x10"])
def test_text_params_take_plain_digits_only(text: str) -> None:
    with pytest.raises(ValidationError):
        Params.model_validate({"id": text})
    assert Params.model_validate({"id": "2"}).id == 2


def test_domain_checks_and_schema_show_the_range() -> None:
    assert PERIOD.check(13) == 13
    with pytest.raises(DomainError) as caught:
        PERIOD.check(14)
    assert caught.value.code is ErrorCode.PERIOD_OUT_OF_RANGE
    schema = Body.model_json_schema()["properties"]
    assert schema["id"]["minimum"] == 1 and schema["id"]["maximum"] == ID_MAX
    assert schema["amount"]["maximum"] == MONEY_MAX


def test_forms_read_numbers_through_the_same_domains() -> None:
    assert parse_money("1,000,000,000,000") == MONEY_MAX
    with pytest.raises(FormError, match="1,000,000,000,000"):
        parse_money(str(MONEY_MAX + 1))
    with pytest.raises(FormError):
        parse_optional_int("14", "期別", PERIOD)
    with pytest.raises(FormError):
        parse_optional_int(str(2**63), "預算科目")
    with pytest.raises(FormError) as caught:
        parse_money("x" * 1_000_000)
    assert len(caught.value.message) < 100  # the typed value is not repeated whole


def test_close_refuses_a_period_outside_1_to_13_before_scanning() -> None:
    for period in (0, 14, 10**6, 2**63):
        assert [e.code for e in check_close(period, set())] == [ErrorCode.PERIOD_OUT_OF_RANGE]
    assert [e.code for e in check_close(3, {1})] == [ErrorCode.PERIOD_EARLIER_OPEN]


def test_json_depth_is_counted_outside_strings() -> None:
    assert not json_depth_exceeds(b'{"a": [1, 2, {"b": [3]}]}', 32)
    assert json_depth_exceeds(b"[" * 33 + b"]" * 33, 32)
    assert not json_depth_exceeds(b'{"a": "' + b"[" * 5000 + b'"}', 32)  # brackets inside a string
    assert not json_depth_exceeds(b'{"a": "\\"' + b"[" * 5000 + b'"}', 32)  # after an escaped quote
    assert is_json_media_type("application/json; charset=utf-8") and is_json_media_type("application/x+json")
    assert not is_json_media_type("text/plain")


def test_error_bodies_are_bounded_and_serialisable() -> None:
    huge = RuleError(ErrorCode.INVALID_INPUT, "x", "x", {"value": "y" * 1_000_000, "n": float("nan"),
                                                         "items": list(range(10_000))})
    body = error_body([huge] * 50)
    json.dumps(body, allow_nan=False)  # serialisable: no NaN left in it
    assert len(JSONResponse(body).body) <= MAX_ERROR_BODY and body["code"] == "invalid_input"
    assert bounded(float("inf")) == "inf" and bounded([1] * 100)[-1] == "…(+90)"


def test_validation_problems_are_named_by_their_domain_code() -> None:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"id": 1, "amount": "z" * 1_000_000})
    error = validation_error(list(caught.value.errors()))
    assert error.code is ErrorCode.MONEY_NOT_INTEGER
    assert len(json.dumps(error.as_json())) < 1000


def test_fast_path_leaves_out_of_domain_bodies_to_the_route() -> None:
    assert parse(b'{"budget_line_id": 1, "amount": 5}') == {"budget_line_id": 1, "amount": 5}
    for body in (b'{"budget_line_id": 9223372036854775808, "amount": 1}',
                 b'{"budget_line_id": 1, "amount": 0}',
                 b'{"budget_line_id": 1, "amount": 1000000000001}', b'{"budget_line_id": 1, "amount": NaN}',
                 b'{"budget_line_id": ' + b"[" * 5000 + b"]" * 5000 + b', "amount": 1}'):
        assert parse(body) is None


def test_writer_refuses_out_of_domain_requests_before_queueing() -> None:
    assert out_of_domain(CertifyRequest(1, 1, None)) == []
    codes = [e.code for e in out_of_domain(CertifyRequest(2**63, -1, None, period=14, purpose="p" * 300))]
    assert codes == [ErrorCode.ID_OUT_OF_RANGE, ErrorCode.MONEY_NOT_POSITIVE, ErrorCode.PERIOD_OUT_OF_RANGE,
                     ErrorCode.INVALID_INPUT]
    assert AMOUNT.low == 1 and ID.high == 2**31 - 1
