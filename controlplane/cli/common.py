"""What every command group shares: consoles, exit codes, and turning user-facing failures into one
clear line and a non-zero exit (never a traceback for a user's mistake)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from controlplane.errors import MAPPING, ExitCode, classify

EXIT_OK, EXIT_FAILED, EXIT_USAGE = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE

console = Console()
errors = Console(stderr=True, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Any package's error, as its message and the exit code its kind maps to (controlplane.errors)."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as error:
        known = classify(error)
        if known is None:
            raise
        code, message = known
        errors.print(message, markup=False, highlight=False)
        raise typer.Exit(MAPPING[code].exit_code) from None
