"""Where a webhook may go: globally routable unicast addresses, and what an operator allows besides.

A webhook is a request the server makes for a caller. Aimed at loopback, a private network or a cloud
metadata address, it would reach what the caller cannot (server-side request forgery), and the delivery's
status would tell them what answered. So the policy is applied twice: at submit to every address the host
resolves to (``refusal``), and on every delivery to the addresses the sender is about to connect to
(``resolver.py``), because DNS may answer differently by then.

``COMFYGATE_WEBHOOK_ALLOW`` (``Settings.webhook_allow``) lists host names (matched exactly, ignoring case; any
address they resolve to is allowed) and networks (CIDR, or one address) that are allowed although internal.

Pure: no aiohttp, no settings, no database, so the run service can apply it at submit.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["WebhookTargets", "TargetRefused", "targets_allowing", "PUBLIC_ONLY", "HINT"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HINT = "webhooks may only reach public addresses (operators can allow hosts with COMFYGATE_WEBHOOK_ALLOW)"

# First match names the kind. Whatever these miss and Python's ``is_global`` does not call global is "reserved".
_V4_KINDS: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(net), kind) for net, kind in (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),  # the retired 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
))
_V6_KINDS: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(net), kind) for net, kind in (
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("100::/64", "reserved"),  # discard-only
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "reserved"),  # IETF protocol assignments, Teredo among them
    ("fc00::/7", "private"),  # unique local
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # the retired site-local block
    ("ff00::/8", "multicast"),
))
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
# IPv6 forms that carry an IPv4 address a packet may end up at: judged by that address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses (::a.b.c.d)
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")  # one dot-separated part of a host name


class TargetRefused(OSError):
    """A webhook target the policy refuses. An OSError, so that aiohttp treats the refusal in a resolver as a
    failed connection: the socket is never opened."""


def _resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to. getaddrinfo also reads numeric spellings (2130706433, 0x7f.1)."""
    return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


def _parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.partition("%")[0])  # a link-local IPv6 answer may carry a %scope
    except ValueError:
        return None


# Kinds whose name alone may puzzle an operator.
_NOTES = {"shared": "100.64.0.0/10, carrier-grade NAT"}


def _describe(kind: str, note: str = "") -> str:
    """ "a loopback address", "an unspecified address", "a shared address (100.64.0.0/10, ...)"."""
    note = note or _NOTES.get(kind, "")
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address" + (f" ({note})" if note else "")


def _v4_kind(address: ipaddress.IPv4Address) -> str | None:
    for network, kind in _V4_KINDS:
        if address in network:
            return kind
    return None if address.is_global else "reserved"


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _why_not_public(address: IPAddress) -> str | None:
    """What ``address`` is when it is not a public unicast address ("a loopback address"), else None."""
    if isinstance(address, ipaddress.IPv4Address):
        kind = _v4_kind(address)
        return None if kind is None else _describe(kind)
    # :: and ::1 first: they lie inside the IPv4-compatible block too.
    if address.is_unspecified:
        return _describe("unspecified")
    if address.is_loopback:
        return _describe("loopback")
    inner = _embedded_v4(address)
    if inner is not None:
        inner_kind = _v4_kind(inner)
        if inner_kind is not None:
            return _describe(inner_kind, f"IPv4 {inner} inside IPv6")
        # A public address behind a mapped, 6to4 or NAT64 form is reached like the address itself; the
        # IPv4-compatible form is deprecated and routed nowhere.
        return _describe("reserved", "deprecated IPv4-compatible form") if address in _COMPATIBLE else None
    for network, kind in _V6_KINDS:
        if address in network:
            return _describe(kind)
    return None if address in _GLOBAL_UNICAST_V6 and address.is_global else _describe("reserved")


def _allow_entry(entry: str) -> str | IPNetwork:
    """One COMFYGATE_WEBHOOK_ALLOW entry: a network (CIDR or one address), else a host name."""
    text = entry.strip().lower().rstrip(".")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    is_name = len(text) <= 253 and all(_LABEL.fullmatch(label) for label in text.split("."))
    if not is_name or text.replace(".", "").isdigit():
        raise ValueError(f"COMFYGATE_WEBHOOK_ALLOW: {entry!r} is neither a host name nor a network "
                         "(examples: receiver.internal, 10.1.2.0/24, ::1)")
    return text


@dataclass(frozen=True)
class WebhookTargets:
    """The address policy, with the operator's allowlist. ``resolve`` is getaddrinfo; tests of DNS answers
    pass their own."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    resolve: Callable[[str], list[str]] = field(default=_resolve, compare=False, repr=False)

    @classmethod
    def allowing(cls, entries: Iterable[str], resolve: Callable[[str], list[str]] = _resolve) -> WebhookTargets:
        """The policy with ``entries`` (host names and networks) allowed; ValueError names a bad entry."""
        parsed = [_allow_entry(entry) for entry in entries]
        return cls(frozenset(p for p in parsed if isinstance(p, str)),
                   tuple(p for p in parsed if not isinstance(p, str)), resolve)

    def allows_name(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def why_refused(self, address: str) -> str | None:
        """Why a connection to ``address`` (an IP address as text) is refused ("a loopback address", ...),
        or None when it is allowed."""
        parsed = _parse_address(address)
        if parsed is None:
            return "not an IP address"
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            reached: IPAddress = parsed.ipv4_mapped  # the socket reaches the IPv4 address: allowed as that
        else:
            reached = parsed
        if any(reached.version == net.version and reached in net for net in self.networks):
            return None
        return _why_not_public(parsed)

    def literal_refusal(self, host: str) -> str | None:
        """For a host written as an IP address: why it is refused (with the hint), or None. A host name gives
        None: its addresses are judged once it is resolved."""
        if _parse_address(host) is None:
            return None
        why = self.why_refused(host)
        return None if why is None else f"{host} is {why}; {HINT}"

    def resolved_refusal(self, host: str, addresses: Iterable[str]) -> str | None:
        """Why ``host``, which resolved to ``addresses``, is refused (every address must be allowed)."""
        if self.allows_name(host):
            return None
        for address in addresses:
            why = self.why_refused(address)
            if why is not None:
                return f"{host} resolves to {address}, {why}; {HINT}"
        return None

    def refusal(self, host: str) -> str | None:
        """Why a webhook to ``host`` is refused at submit, or None. Resolves a host name (this blocks)."""
        if _parse_address(host) is not None:
            return self.literal_refusal(host)
        if self.allows_name(host):
            return None
        try:
            addresses = self.resolve(host)
        except (OSError, UnicodeError) as exc:  # gaierror; UnicodeError: a name IDNA cannot encode
            return f"host {host!r} does not resolve ({exc})"
        if not addresses:
            return f"host {host!r} does not resolve"
        return self.resolved_refusal(host, addresses)


# The policy with nothing allowed besides public addresses.
PUBLIC_ONLY = WebhookTargets()


@functools.lru_cache(maxsize=8)
def targets_allowing(allow: tuple[str, ...]) -> WebhookTargets:
    """The policy for a ``Settings.webhook_allow`` value, parsed once."""
    return WebhookTargets.allowing(allow)
