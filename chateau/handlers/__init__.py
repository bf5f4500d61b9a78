"""Request handlers: one function per request type.

:mod:`chateau.handlers.dispatch` maps each request type to its handler and
runs it; the other modules hold the handlers, grouped by what they act on.
Every handler takes the :class:`~chateau.handlers.context.Services` (the
collaborators built once by :mod:`chateau.service`), the requesting
:class:`~chateau.connection.Connection` and the typed request, and returns
the direct reply or raises :class:`~chateau.errors.ChateauError`.
See docs/architecture.md for how to add one.
"""
