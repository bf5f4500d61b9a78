"""The client's real address: the TCP peer, or what a trusted proxy says."""

from __future__ import annotations

import pytest

from chateau.addresses import ClientAddresses, canonical_address
from chateau.config import load_config
from chateau.errors import ConfigError


def resolver(*trusted: str) -> ClientAddresses:
    return ClientAddresses(trusted)


def test_without_trusted_proxies_the_headers_are_ignored():
    addresses = resolver()
    assert addresses.resolve("127.0.0.1", ["10.0.0.7"], ["for=10.0.0.8"]) == "127.0.0.1"


def test_a_header_from_an_untrusted_peer_is_ignored():
    addresses = resolver("10.0.0.1")
    assert addresses.resolve("192.0.2.9", ["203.0.113.5"], None) == "192.0.2.9"
    assert addresses.resolve("192.0.2.9", None, ["for=203.0.113.5"]) == "192.0.2.9"


def test_x_forwarded_for_from_a_trusted_proxy():
    addresses = resolver("10.0.0.1")
    assert addresses.resolve("10.0.0.1", ["203.0.113.5"], None) == "203.0.113.5"
    # No header: the proxy's own request (a health check) is the proxy's.
    assert addresses.resolve("10.0.0.1", None, None) == "10.0.0.1"


def test_several_hops_take_the_right_most_untrusted_address():
    addresses = resolver("10.0.0.0/8", "192.168.1.1")
    # The client wrote the left-most entry itself (a proxy that appends).
    chain = ["6.6.6.6, 203.0.113.5, 10.1.2.3", "192.168.1.1"]
    assert addresses.resolve("10.0.0.1", chain, None) == "203.0.113.5"
    # Every hop trusted: the left-most.
    assert addresses.resolve("10.0.0.1", ["10.9.9.9, 10.1.1.1"], None) == "10.9.9.9"


def test_forwarded_rfc_7239():
    addresses = resolver("10.0.0.1", "10.0.0.2")
    value = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.2;by=10.0.0.1'
    assert addresses.resolve("10.0.0.1", None, [value]) == "2001:db8:cafe::17"
    assert addresses.resolve("10.0.0.1", None, ["for=192.0.2.60;proto=http"]) == "192.0.2.60"
    # X-Forwarded-For is preferred when a proxy sends both.
    assert addresses.resolve("10.0.0.1", ["198.51.100.1"], ["for=6.6.6.6"]) == "198.51.100.1"


@pytest.mark.parametrize("value", [
    "not-an-address", "unknown", "300.1.1.1", "", "1.2.3.4 5.6.7.8", "\x00", "a" * 10000,
])
def test_an_invalid_header_value_is_ignored(value):
    addresses = resolver("10.0.0.1")
    assert addresses.resolve("10.0.0.1", [value], None) == "10.0.0.1"
    assert addresses.resolve("10.0.0.1", None, [f"for={value}"]) == "10.0.0.1"
    assert addresses.resolve("10.0.0.1", None, [f'for="{value}"']) == "10.0.0.1"


@pytest.mark.parametrize("forwarded", [
    "for=_hidden", "for=unknown", "proto=https", 'for="[::1', "for", ";;;,,,", 'for="\\"',
])
def test_an_invalid_forwarded_header_is_ignored(forwarded):
    assert resolver("10.0.0.1").resolve("10.0.0.1", None, [forwarded]) == "10.0.0.1"


def test_addresses_are_canonical():
    assert canonical_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert canonical_address("2001:DB8::0001") == "2001:db8::1"
    assert canonical_address("192.0.2.1:8080") == "192.0.2.1"
    assert canonical_address("[2001:db8::1]:8080") == "2001:db8::1"
    assert canonical_address("  192.0.2.1 ") == "192.0.2.1"
    assert canonical_address("host.example") is None
    # A mapped peer matches a trusted IPv4 network.
    assert resolver("10.0.0.0/8").resolve("::ffff:10.0.0.1", ["192.0.2.1"], None) == "192.0.2.1"
    # The peer itself is canonical, so one client is one key however it is written.
    assert resolver().resolve("::ffff:192.0.2.1", None, None) == "192.0.2.1"


def test_config_trusted_proxies():
    assert load_config().server.trusted_proxies == ()
    config = load_config(None, {("server", "trusted_proxies"): "127.0.0.1, 10.0.0.0/8 ::1"})
    assert config.server.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    for bad in ("10.0.0.1/8", "proxy.example", "10.0.0.0/33"):
        with pytest.raises(ConfigError, match=r"\[server\] trusted_proxies"):
            load_config(None, {("server", "trusted_proxies"): bad})
