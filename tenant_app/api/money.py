"""Money at the API boundary: integer 元 only. A float (even 100.0), a string or a bool is refused."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

MONEY_ERROR_TYPE = "money_not_integer"


def strict_money(value: Any) -> int:
    # bool is an int subclass in Python; JSON true must not become 1 元.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError(
            MONEY_ERROR_TYPE,
            "金額必須為整數元，不接受小數或字串 (money must be an integer number of 元)",
            {"value": repr(value)},
        )
    return value


Money = Annotated[int, BeforeValidator(strict_money)]
