"""Money at the API boundary: integer 元 only, in the declared range (tenant_app/domains.py).

A float (even 100.0), a string or a bool is refused with `money_not_integer`; an amount outside
1 .. 10**12 with `money_out_of_range`. Kept as its own module because tests and callers name it.
"""

from __future__ import annotations

from tenant_app.domains import Amount
from tenant_app.rules.errors import ErrorCode

MONEY_ERROR_TYPE = ErrorCode.MONEY_NOT_INTEGER.value

Money = Amount

__all__ = ["MONEY_ERROR_TYPE", "Money"]
