"""Webhooks reach only public addresses: the address policy, and its refusals at submit through a real server.

No test here lets a request leave: internal targets are refused before any connection (a silent loopback
listener behind the loopback forms proves it), and host names other than numeric spellings and localhost
are answered by a resolver the test passes, never by DNS.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from live_server import Server
from silent_listener import SilentListener

from comfygate.platform.services.webhooks import masked_url, without_credentials
from comfygate.platform.webhooks import HINT, PUBLIC_ONLY, WebhookTargets

REFUSED = [  # (host as written in a URL, what the refusal calls it)
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("10.0.0.1", "10.0.0.1 is a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "169.254.169.254 is a link-local address"),
    ("100.64.0.1", "a shared address"),
    ("0.0.0.0", "0.0.0.0 is an unspecified address"),
    ("0.1.2.3", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("255.255.255.255", "a broadcast address"),
    ("240.0.0.1", "a reserved address"),
    ("192.0.0.8", "a reserved address"),
    ("198.18.0.1", "a benchmarking address"),
    ("192.0.2.1", "a documentation address"),
    ("203.0.113.7", "a documentation address"),
    ("::1", "::1 is a loopback address"),
    ("::", ":: is an unspecified address"),
    ("fe80::1", "a link-local address"),
    ("fe80::1%lo", "a link-local address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("ff02::1", "a multicast address"),
    ("2001:db8::1", "a documentation address"),
    ("2001:2::1", "a benchmarking address"),
    ("100::1", "a reserved address"),
    ("4000::1", "a reserved address"),
    ("::ffff:127.0.0.1", "a loopback address (IPv4 127.0.0.1 inside IPv6)"),  # IPv4-mapped
    ("::ffff:a9fe:a9fe", "a link-local address (IPv4 169.254.169.254 inside IPv6)"),
    ("::127.0.0.1", "a loopback address (IPv4 127.0.0.1 inside IPv6)"),  # IPv4-compatible
    ("::8.8.8.8", "a reserved address (deprecated IPv4-compatible form)"),
    ("2002:a00:1::1", "a private address (IPv4 10.0.0.1 inside IPv6)"),  # 6to4
    ("64:ff9b::7f00:1", "a loopback address (IPv4 127.0.0.1 inside IPv6)"),  # NAT64
    ("64:ff9b:1::1", "a private address"),  # local-use NAT64
    # Numeric spellings of 127.0.0.1 that getaddrinfo reads without asking DNS.
    ("2130706433", "2130706433 resolves to 127.0.0.1, a loopback address"),
    ("0x7f.1", "0x7f.1 resolves to 127.0.0.1, a loopback address"),
    ("017700000001", "017700000001 resolves to 127.0.0.1, a loopback address"),
    ("127.1", "127.1 resolves to 127.0.0.1, a loopback address"),
    ("localhost", "localhost resolves to 127.0.0.1, a loopback address"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]


def _no_dns(host: str) -> list[str]:
    raise AssertionError(f"{host} was looked up in DNS")


def answering(table: dict[str, list[str]]) -> WebhookTargets:
    """A policy whose resolver answers from ``table`` (an unknown name does not resolve)."""
    def resolve(host: str) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]
    return WebhookTargets(resolve=resolve)


@pytest.mark.parametrize(("host", "called"), REFUSED)
def test_every_address_that_is_not_public_unicast_is_refused_and_named(host, called):
    refusal = PUBLIC_ONLY.refusal(host)
    assert refusal is not None and called in refusal and refusal.endswith(HINT)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_pass(host):
    assert WebhookTargets(resolve=_no_dns).refusal(host) is None


def test_a_name_must_resolve_and_every_address_it_resolves_to_must_be_public():
    targets = answering({"hooks.example": ["93.184.215.14"],
                         "mixed.example": ["93.184.215.14", "10.1.2.3"],
                         "rebound.example": ["::ffff:10.0.0.5"]})
    assert targets.refusal("hooks.example") is None
    assert targets.refusal("mixed.example").startswith("mixed.example resolves to 10.1.2.3, a private address")
    assert "(IPv4 10.0.0.5 inside IPv6)" in targets.refusal("rebound.example")
    assert targets.refusal("nowhere.example") == \
        "host 'nowhere.example' does not resolve ([Errno -2] Name or service not known)"


def test_the_allowlist_permits_names_exactly_and_ignoring_case_without_a_lookup():
    targets = WebhookTargets.allowing(["Receiver.Internal."], resolve=_no_dns)
    assert targets.refusal("receiver.internal") is None
    assert targets.refusal("RECEIVER.internal.") is None
    assert targets.resolved_refusal("receiver.internal", ["10.0.0.1"]) is None  # any address it resolves to
    assert "private" in targets.resolved_refusal("other.internal", ["10.0.0.1"])
    assert "loopback" in targets.refusal("127.0.0.1")


def test_the_allowlist_permits_networks_and_single_addresses():
    targets = WebhookTargets.allowing(["10.1.2.0/24", "::1", "127.0.0.1"], resolve=_no_dns)
    assert targets.refusal("10.1.2.200") is None
    assert "10.1.3.1 is a private address" in targets.refusal("10.1.3.1")
    assert targets.refusal("::1") is None
    assert targets.refusal("::ffff:127.0.0.1") is None  # the same socket destination as 127.0.0.1
    assert "127.0.0.2 is a loopback address" in targets.refusal("127.0.0.2")
    assert "fe80::1" in targets.refusal("fe80::1")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "http://hooks.example", "two words", "2130706433", "a..b"])
def test_a_bad_allowlist_entry_is_refused_naming_the_setting(entry):
    with pytest.raises(ValueError, match=r"COMFYGATE_WEBHOOK_ALLOW: .* is neither a host name nor a network"):
        WebhookTargets.allowing([entry])


def test_credentials_are_masked_wherever_a_url_is_shown():
    assert masked_url("https://user:secret@hooks.example:8443/x?y=1") == "https://user:***@hooks.example:8443/x?y=1"
    assert masked_url("https://tok3n@hooks.example/x") == "https://***@hooks.example/x"
    assert masked_url("http://u:p@[broken/x") == "http://u:***@[broken/x"  # unparsable URLs too
    assert masked_url("https://hooks.example/x?at=a@b") == "https://hooks.example/x?at=a@b"
    error = "Cannot connect to https://user:secret@hooks.example/x (user:secret)"
    assert without_credentials(error, "https://user:secret@hooks.example/x") == \
        "Cannot connect to https://user:***@hooks.example/x (user:***)"


# --- through a real server (no allowlist), with silent listeners behind the loopback forms ---

@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[SilentListener, SilentListener]]:
    v4, v6 = SilentListener("127.0.0.1"), SilentListener("::1")
    yield v4, v6
    v4.close()
    v6.close()


@pytest.fixture(scope="module")
def probe_workflow(server: Server) -> str:
    blank = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "probe"}}}
    pushed = server.call("POST", "/v1/workflows", json={"name": "ssrf-probe", "workflow": blank})
    assert pushed.status_code in (200, 201), pushed.text
    return "ssrf-probe"


INTERNAL_URLS = [
    ("http://127.0.0.1:{v4}/x", "127.0.0.1 is a loopback address"),
    ("http://localhost:{v4}/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("http://[::1]:{v6}/", "::1 is a loopback address"),
    ("http://10.0.0.1:{v4}/", "10.0.0.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[::ffff:127.0.0.1]:{v4}/", "::ffff:127.0.0.1 is a loopback address (IPv4 127.0.0.1 inside IPv6)"),
    ("http://2130706433:{v4}/", "2130706433 resolves to 127.0.0.1, a loopback address"),
    ("http://0.0.0.0:{v4}/", "0.0.0.0 is an unspecified address"),
    ("http://user:s3cret@0x7f.1:{v4}/", "0x7f.1 resolves to 127.0.0.1, a loopback address"),
]


@pytest.mark.parametrize(("url", "called"), INTERNAL_URLS)
def test_an_internal_webhook_target_is_a_422_naming_webhook_and_nothing_is_sent(server, probe_workflow, listeners,
                                                                            url, called):
    v4, v6 = listeners
    target = url.format(v4=v4.port, v6=v6.port)
    response = server.call("POST", f"/v1/workflows/{probe_workflow}/runs", json={"inputs": {}, "webhook": target})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"] == {"field": "webhook"}
    assert error["message"] == f"webhook: {called}; {HINT}"
    assert "s3cret" not in response.text
    assert v4.connections() == 0 and v6.connections() == 0


def test_a_refused_url_with_credentials_is_echoed_masked(server, probe_workflow):
    response = server.call("POST", f"/v1/workflows/{probe_workflow}/runs",
                           json={"inputs": {}, "webhook": "ftp://user:s3cret@hooks.example/x"})
    assert response.status_code == 422, response.text
    assert "ftp://user:***@hooks.example/x" in response.json()["error"]["message"]
    assert "s3cret" not in response.text
