"""Money at the API boundary: integer 元 only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tenant_app.api.money import MONEY_ERROR_TYPE
from tenant_app.api.schemas import CertifyIn, JournalLineIn


@pytest.mark.parametrize("bad", [100.0, 100.5, "100", True, None, [100]])
def test_non_integer_money_is_refused_with_its_own_error_type(bad: object) -> None:
    with pytest.raises(ValidationError) as caught:
        CertifyIn.model_validate({"budget_line_id": 1, "amount": bad})
    assert [e["type"] for e in caught.value.errors()] == [MONEY_ERROR_TYPE]


def test_integer_money_passes_including_large_amounts() -> None:
    assert CertifyIn.model_validate({"budget_line_id": 1, "amount": 12_345_678_901}).amount == 12_345_678_901
    assert JournalLineIn.model_validate({"account_code": "5101", "debit": 5}).credit == 0


def test_json_float_is_refused_even_when_whole() -> None:
    with pytest.raises(ValidationError):
        CertifyIn.model_validate_json('{"budget_line_id": 1, "amount": 100.0}')


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        CertifyIn.model_validate({"budget_line_id": 1, "amount": 1, "amont": 2})
