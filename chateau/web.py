"""The HTTP side of the port: the WebSocket at ``/ws`` and a small landing page."""

from __future__ import annotations

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from chateau import __version__
from chateau.protocol import ChateauServerFactory

LANDING = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Chateau</title>"
    f"<p>Chateau {__version__} is running. Connect a WebSocket client to <code>/ws</code>.</p>"
    "</html>"
).encode()


class LandingPage(Resource):
    """``/``: says what this port is, for a person who opens it in a browser."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return LANDING


def make_site(factory: ChateauServerFactory) -> Site:
    root = Resource()
    root.putChild(b"", LandingPage())
    root.putChild(b"ws", WebSocketResource(factory))
    site = Site(root)
    site.displayTracebacks = False
    return site
