"""The one failure the store tells apart: the database cannot be used right now.

The store raises :class:`StoreUnavailable` in place of SQLAlchemy's driver
errors (``DBAPIError``, IntegrityError included) and connection pool
timeouts, so the layers above can answer "retry shortly" without importing
SQLAlchemy (see ``chateau.store.engine.run_transaction``).
"""

from __future__ import annotations


class StoreUnavailable(Exception):
    """A transaction failed in the driver or the connection pool, not in our code.

    Its text is the original error's; the original is its ``__cause__``.
    """
