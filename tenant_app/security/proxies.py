"""Who the client is and whether it came over TLS, believing forwarded headers only from the gateway.

In a county VM every request arrives from the platform's HAProxy (as the guest sees it: 10.0.2.2),
which sets X-Forwarded-For to the client's address and X-Forwarded-Proto to its scheme, replacing
whatever the client sent (provisioning/templates/haproxy.cfg.j2). The app believes those headers
only when the direct peer is one of the trusted proxies (setting TENANT_APP_TRUSTED_PROXIES, empty
by default): from anyone else they are the client's own claim, and ignored. Uvicorn's own
proxy-header handling, which trusts 127.0.0.1 by default, is switched off (tenant_app/__main__.py):
with it, any local client could name itself a fresh address for every log-in attempt.

X-Forwarded-For is read from the right: each proxy appends the address it saw, so the rightmost
entry that is not itself a trusted proxy is the nearest address no trusted party vouches beyond.
Plain functions over plain data; the ASGI edge is tenant_app.middleware.ForwardedMiddleware.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxiesError(ValueError):
    """The trusted-proxies setting names something that is not an address or a network."""


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """'10.0.2.2' or '10.0.2.2, 192.0.2.0/24, ::1': addresses and networks, comma or space separated."""
        networks = []
        for item in text.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as error:
                raise TrustedProxiesError(f"not an address or a network: {item!r}") from error
        return cls(tuple(networks))

    def trusts(self, peer: str | None) -> bool:
        if not self.networks or peer is None:
            return False
        address = _address(peer)
        return address is not None and any(address in network for network in self.networks)


@functools.lru_cache(maxsize=8)
def trusted_proxies(text: str) -> TrustedProxies:
    """The parsed setting, parsed once per distinct value (the middleware asks on every request)."""
    return TrustedProxies.parse(text)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies) -> str | None:
    """The client's address: the peer itself unless the peer is a trusted proxy.

    Behind trusted proxies, the rightmost X-Forwarded-For entry that is not a trusted proxy. An entry
    that is not an address (a port, 'unknown', garbage) stops the walk at the last trusted hop: such
    clients share that hop's throttle budget rather than getting one of their own.
    """
    if not trusted.trusts(peer):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    nearest = peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return nearest
        nearest = str(address)
        if not trusted.trusts(nearest):
            return nearest
    return nearest


def forwarded_https(peer: str | None, forwarded_proto: Iterable[str], trusted: TrustedProxies) -> bool | None:
    """True/False when a trusted proxy says how the client reached it; None when nobody trusted says."""
    if not trusted.trusts(peer):
        return None
    values = [v.strip().lower() for value in forwarded_proto for v in value.split(",") if v.strip()]
    if not values:
        return None
    return values[-1] == "https"  # the nearest proxy's word, as with X-Forwarded-For
