"""The Autobahn internals the direct frame paths use exist, and a missing one is named.

chateau/frames.py reads and writes frames past Autobahn, through private
attributes a new Autobahn release may rename. These tests fail with the
name of what is missing and the releases the paths were checked against,
rather than with an AttributeError on a live connection.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import autobahn
import pytest
from packaging.specifiers import SpecifierSet
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chateau.config import Config
from chateau.frames import (
    AUTOBAHN_RANGE,
    CONNECTION_INTERNALS,
    FACTORY_INTERNALS,
    PREPARED_INTERNALS,
    TRAFFIC_COUNTERS,
    AutobahnMismatch,
    check_autobahn,
    prepare_frame,
)
from chateau.metrics import Metrics
from chateau.protocol import ChateauServerFactory, ChateauServerProtocol

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def _open_chateau_connection() -> tuple[ChateauServerProtocol, ChateauServerFactory]:
    """A connection built by Chateau's factory, opened over an in-memory transport."""
    dispatcher = SimpleNamespace(closed=lambda connection: None, last_routed_id=0)
    factory = ChateauServerFactory(dispatcher, Config(), Metrics(), reactor=Clock())  # type: ignore[arg-type]
    connection = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(HANDSHAKE)
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()
    return connection, factory


def test_the_installed_autobahn_has_every_internal_the_fast_paths_use() -> None:
    check_autobahn()  # on a plain Autobahn connection and prepared message


def test_chateau_connections_have_them_and_take_both_fast_paths() -> None:
    connection, factory = _open_chateau_connection()
    check_autobahn(connection, factory.prepareMessage(b'{"type":"x"}'))
    # Delivery frames a fan-out without the factory: the same frame.
    prepared = prepare_frame(b'{"type":"x"}')
    check_autobahn(connection, prepared)
    assert prepared.payloadHybi == factory.prepareMessage(b'{"type":"x"}').payloadHybi
    # With Chateau's options, neither path falls back to Autobahn's.
    assert connection._direct_read and connection._direct_write


def test_setup_pins_autobahn_to_the_checked_range() -> None:
    setup = (Path(__file__).parent.parent / "setup.py").read_text(encoding="utf-8")
    assert re.findall(r'"autobahn([^"]*)"', setup) == [AUTOBAHN_RANGE]
    assert autobahn.__version__ in SpecifierSet(AUTOBAHN_RANGE), (
        f"autobahn {autobahn.__version__} is installed; chateau/frames.py was checked "
        f"against autobahn{AUTOBAHN_RANGE}"
    )


def _stubs(missing: str) -> tuple[Any, Any]:
    """A connection and a prepared message with every internal but *missing*."""

    def holder(names: tuple[str, ...]) -> SimpleNamespace:
        return SimpleNamespace(**{name: None for name in names if name != missing})

    connection = holder(CONNECTION_INTERNALS)
    connection.factory = holder(FACTORY_INTERNALS)
    if missing != "trafficStats":
        connection.trafficStats = holder(TRAFFIC_COUNTERS)
    return connection, holder(PREPARED_INTERNALS)


def test_the_stubs_pass_when_nothing_is_missing() -> None:
    check_autobahn(*_stubs(missing=""))


@pytest.mark.parametrize(
    "missing", CONNECTION_INTERNALS + FACTORY_INTERNALS + TRAFFIC_COUNTERS + PREPARED_INTERNALS
)
def test_a_missing_internal_is_named_with_the_checked_range(missing: str) -> None:
    with pytest.raises(AutobahnMismatch) as raised:
        check_autobahn(*_stubs(missing))
    message = str(raised.value)
    assert f"no {missing!r} on " in message
    assert autobahn.__version__ in message and AUTOBAHN_RANGE in message
