"""Provisioning's one error base. Every refusal or failure that provisioning reports to an operator
derives from ProvisioningError (hypervisor, site daemons, images, templates, guest commands,
Ansible, the gateway), so the control plane maps them once."""

from __future__ import annotations


class ProvisioningError(RuntimeError):
    """A precondition of a provisioning operation does not hold, or the operation failed; the message
    says what to do."""
