"""What every command group shares: consoles, exit codes, and turning user-facing failures into one
clear line and a non-zero exit (never a traceback for a user's mistake)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from inventory.placement import NoHostFits
from inventory.queries import NotFound
from provisioning.hypervisor import HypervisorError
from provisioning.images import ImageBuildError
from provisioning.sites import SiteError
from provisioning.steps import ProvisioningError
from provisioning.templates import TemplateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

console = Console()
errors = Console(stderr=True, soft_wrap=True)

# Failures whose message is written for the operator: print it, exit 1.
OPERATOR_ERRORS: tuple[type[Exception], ...] = (
    ProvisioningError, HypervisorError, SiteError, ImageBuildError, TemplateError, NoHostFits,
)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except NotFound as error:
        errors.print(str(error), markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except OPERATOR_ERRORS as error:
        errors.print(str(error), markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except SQLAlchemyError as error:
        errors.print(f"the platform database failed: {error}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
