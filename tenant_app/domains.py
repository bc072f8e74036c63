"""The declared domain of every number a request may carry, checked at the edge.

One `IntDomain` per kind of number (ids, periods, money, page sizes, ...) states its range once;
the JSON API's schemas, its path and query parameters and the web forms all read numbers through
it, so an id of 2**63, a period of 10**6, a float or a string "2" never reaches a service, a loop
or a database column. Each range is one the database column holds exactly:

- ids: 1 .. 2**31 - 1, because the id columns are INTEGER (int4 on PostgreSQL);
- periods: 1 .. 13 (13 = year-end adjustments), the CHECK `period_range`;
- money: integer 元, |amount| <= 10**12 (one trillion 元: more than a county's whole budget). The
  columns are BIGINT (2**63 - 1 ≈ 9.2 * 10**18), so a running total or a report's SUM over up to
  9 million maximal amounts still fits exactly, and SQLite never falls back to REAL.

Two readings of the same domain: `json` is strict (JSON numbers only: no "2", no 2.0, no true, no
NaN), `text` reads the decimal digits of a path segment, query string or form field (no "2.0",
no "+2", no "1_000", no spaces). A refusal is a pydantic error whose type is the ErrorCode the API
answers with (api/errors.py), or a FormError (web/forms.py) with a zh-TW message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from tenant_app.rules.errors import ErrorCode

# Longest digit string any domain can accept (13 digits for money); anything longer is refused
# before int() is called, so a million-digit field costs nothing.
_DIGITS = re.compile(r"-?[0-9]{1,20}")


class DomainError(ValueError):
    """A number outside its domain (or not a number): the code, and zh-TW / English messages."""

    def __init__(self, code: ErrorCode, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en


@dataclass(frozen=True)
class IntDomain:
    name: str  # English, for messages: "id", "period", "amount"
    label_zh: str
    low: int
    high: int
    not_integer: ErrorCode
    out_of_range: ErrorCode
    below: ErrorCode | None = None  # a code of its own for values under `low` (money: not positive)

    def check(self, value: int) -> int:
        if value < self.low and self.below is not None:
            raise DomainError(self.below, f"{self.label_zh}須大於零",
                              f"{self.name} must be greater than zero")
        if not self.low <= value <= self.high:
            raise DomainError(self.out_of_range, f"{self.label_zh}須在 {self.low:,} 至 {self.high:,} 之間",
                              f"{self.name} must be between {self.low} and {self.high}")
        return value

    def _not_integer(self) -> DomainError:
        return DomainError(self.not_integer, f"{self.label_zh}須為整數",
                           f"{self.name} must be an integer (no decimals, strings or booleans)")

    def from_json(self, value: object) -> int:
        # bool is an int subclass: JSON true must not become 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._not_integer()
        return self.check(value)

    def from_text(self, value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):  # a default, or a test's direct call
            return self.check(value)
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise self._not_integer()
        return self.check(int(value))

    # ---- pydantic adapters (the metadata of the Annotated types below) ----------------------------

    def _validator(self, reader: Callable[[object], int]) -> BeforeValidator:
        def validate(value: object) -> int:
            try:
                return reader(value)
            except DomainError as error:
                raise PydanticCustomError(error.code.value, f"{error.message_zh} ({error.message_en})",
                                          {"low": self.low, "high": self.high}) from None

        return BeforeValidator(validate)

    def json_validator(self) -> BeforeValidator:
        return self._validator(self.from_json)

    def text_validator(self) -> BeforeValidator:
        return self._validator(self.from_text)

    def interval(self) -> Interval:
        """The range again as annotated-types metadata: it is what the OpenAPI schema shows."""
        return Interval(ge=self.low, le=self.high)


ID_MAX = 2**31 - 1
PERIOD_FIRST, PERIOD_LAST = 1, 13
MONEY_MAX = 10**12
PAGE_MAX = 1000
TOKEN_DAYS_MAX = 3650

ID = IntDomain("id", "編號", 1, ID_MAX, ErrorCode.NOT_INTEGER, ErrorCode.ID_OUT_OF_RANGE)
PERIOD = IntDomain("period", "期別", PERIOD_FIRST, PERIOD_LAST, ErrorCode.NOT_INTEGER,
                   ErrorCode.PERIOD_OUT_OF_RANGE)
# An amount asked for, paid or moved: strictly positive.
AMOUNT = IntDomain("amount", "金額", 1, MONEY_MAX, ErrorCode.MONEY_NOT_INTEGER, ErrorCode.MONEY_OUT_OF_RANGE,
                   below=ErrorCode.MONEY_NOT_POSITIVE)
# One side of a journal line: 0 means "the other side" (the one-sided rule checks the pair).
LINE_AMOUNT = IntDomain("amount", "金額", 0, MONEY_MAX, ErrorCode.MONEY_NOT_INTEGER,
                        ErrorCode.MONEY_OUT_OF_RANGE)
# A signed change (追加減預算: a cut is negative).
SIGNED_AMOUNT = IntDomain("amount", "金額", -MONEY_MAX, MONEY_MAX, ErrorCode.MONEY_NOT_INTEGER,
                          ErrorCode.MONEY_OUT_OF_RANGE)
PAGE_SIZE = IntDomain("limit", "筆數", 1, PAGE_MAX, ErrorCode.NOT_INTEGER, ErrorCode.NUMBER_OUT_OF_RANGE)
OFFSET = IntDomain("offset", "起始筆數", 0, ID_MAX, ErrorCode.NOT_INTEGER, ErrorCode.NUMBER_OUT_OF_RANGE)
TOKEN_DAYS = IntDomain("days", "有效天數", 1, TOKEN_DAYS_MAX, ErrorCode.NOT_INTEGER,
                       ErrorCode.NUMBER_OUT_OF_RANGE)
# A Gregorian fiscal year (reports name years, not fiscal_year ids).
YEAR = IntDomain("year", "年度", 1912, 9999, ErrorCode.NOT_INTEGER, ErrorCode.NUMBER_OUT_OF_RANGE)

# The types, named for what they carry. JSON body fields:
Id = Annotated[int, ID.interval(), ID.json_validator()]
Period = Annotated[int, PERIOD.interval(), PERIOD.json_validator()]
Amount = Annotated[int, AMOUNT.interval(), AMOUNT.json_validator()]
LineAmount = Annotated[int, LINE_AMOUNT.interval(), LINE_AMOUNT.json_validator()]
SignedAmount = Annotated[int, SIGNED_AMOUNT.interval(), SIGNED_AMOUNT.json_validator()]
# Path, query and form parameters:
IdParam = Annotated[int, ID.interval(), ID.text_validator()]
PeriodParam = Annotated[int, PERIOD.interval(), PERIOD.text_validator()]
PageSizeParam = Annotated[int, PAGE_SIZE.interval(), PAGE_SIZE.text_validator()]
OffsetParam = Annotated[int, OFFSET.interval(), OFFSET.text_validator()]

# Bounds of collections and free text in a body, so no list or string costs unbounded work.
MAX_LINES = 200  # lines of one voucher or journal entry
MAX_EINVOICES = 200
MAX_TEXT = 1000
