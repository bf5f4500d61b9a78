"""Chateau: a WebSocket chat server for campuses and teams, on Twisted and Autobahn."""

__version__ = "0.1.0"
