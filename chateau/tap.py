"""``twistd chateau``: command-line options and the service maker."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from chateau.config import Config, load_config
from chateau.errors import ConfigError


class Options(usage.Options):
    """Options of ``twistd chateau``; the command line beats ``--config``."""

    synopsis = "[--config FILE] [--listen ENDPOINT ...] [--db URL]"
    longdesc = (
        "Chateau serves its WebSocket chat protocol at /ws on every --listen "
        "endpoint (default tcp:8888:interface=127.0.0.1; use "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem for wss). Accounts, groups "
        "and messages live in the database given by --db (default "
        "sqlite:///chateau.sqlite3, a file in the working directory). Every other "
        "setting is a key of the INI file given by --config; conf/chateau.ini "
        "lists them all with their defaults."
    )
    optParameters = [
        ["config", "c", None, "INI file with the server's settings (see conf/chateau.ini)."],
        ["db", None, None, "SQLAlchemy database URL; overrides [database] url."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.config: Config | None = None

    def opt_listen(self, endpoint: str) -> None:
        """Twisted endpoint to serve on, e.g. tcp:8888:interface=127.0.0.1
        (repeatable; overrides [server] listen)."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        overrides: dict[tuple[str, str], str] = {}
        if self["listen"]:
            overrides[("server", "listen")] = " ".join(self["listen"])
        if self["db"] is not None:
            overrides[("database", "url")] = self["db"]
        try:
            self.config = load_config(self["config"], overrides)
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None
        for description in self.config.server.listen:
            _check_endpoint(description)


def _check_endpoint(description: str) -> None:
    """Refuse an endpoint string Twisted cannot parse, before anything starts."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as exc:  # the parsers raise anything from ValueError to KeyError
        raise usage.UsageError(f"[server] listen: bad endpoint {description!r}: {exc}") from None


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from chateau.service import Chateau, prepare_database

    assert options.config is not None
    prepare_database(options.config.database.url, options.config.search.language)
    return Chateau(options.config, reactor, exit_on_failure=True, own_process=True)
