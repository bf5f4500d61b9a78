"""``python -m chateau.client``: the same as the ``chateau-client`` command."""

from chateau.client.cli import run

run()
