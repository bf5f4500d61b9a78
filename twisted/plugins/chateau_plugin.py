"""twistd plugin for Chateau; imports stay light because ``twistd --help`` loads every plugin."""

from twisted.application.service import ServiceMaker

chateau = ServiceMaker(
    "Chateau",
    "chateau.tap",
    "WebSocket chat server for campuses and teams.",
    "chateau",
)
