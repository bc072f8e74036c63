"""The inventory's one error base: every refusal of the inventory derives from it, so callers (the
control plane's use cases) can tell the inventory's own refusals from a bug."""

from __future__ import annotations


class InventoryError(Exception):
    """An inventory request that cannot be honoured; the message says what to do instead."""
