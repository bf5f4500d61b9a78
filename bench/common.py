"""What the two reference servers share: the wire format and bcrypt off the event loop.

The reference servers speak just enough of Chateau's protocol (sign-in,
groups, group and direct messages) for the load generator to drive them
exactly as it drives Chateau. Their frames have Chateau's fields in
Chateau's order, so frame sizes match.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

import bcrypt

# Sign-ins hashing at once before "server busy": Chateau's default bound.
MAX_PENDING_SIGNINS = 64
BCRYPT_THREADS = 2
_niced = threading.local()


def encode(message: dict[str, Any]) -> bytes:
    """Compact JSON, as Chateau writes it."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def iso_now() -> str:
    """The wire's timestamp: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(int(time.time() * 1000) / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, detail: str, msg_id: Any = None) -> dict[str, Any]:
    return {"type": "ErrorResponse", "status": status, "detail": detail, "msg_id": msg_id}


def register_response(username: str, msg_id: Any) -> dict[str, Any]:
    return {"type": "RegisterResponse", "status": 200, "username": username,
            "session_key": "-", "msg_id": msg_id}


def group_init_response(chatname: str, msg_id: Any) -> dict[str, Any]:
    return {"type": "GroupMessageInitResponse", "status": 200, "chatname": chatname,
            "msg_id": msg_id}


def group_init_notice(chatname: str, creator: str, members: list[str]) -> dict[str, Any]:
    return {"type": "GroupMessageInitResponse", "status": 201, "chatname": chatname,
            "creator": creator, "members": sorted(members)}


def send_response(message_id: int, timestamp: str, msg_id: Any) -> dict[str, Any]:
    return {"type": "MessageSendResponse", "status": 200, "id": message_id,
            "timestamp": timestamp, "msg_id": msg_id}


def group_recv(sender: str, chatname: str, content: str, message_id: int,
               timestamp: str) -> dict[str, Any]:
    return {"type": "GroupMessageRecv", "status": 200, "sender": sender, "chatname": chatname,
            "content": content, "id": message_id, "timestamp": timestamp}


def direct_recv(sender: str, content: str, message_id: int, timestamp: str) -> dict[str, Any]:
    return {"type": "MessageRecv", "status": 200, "sender": sender, "chatname": sender,
            "groupchat": False, "content": content, "id": message_id, "timestamp": timestamp}


def hash_password(password: str, cost: int) -> str:
    """bcrypt on a worker thread, niced like Chateau's hashers so the loop keeps its core."""
    if not getattr(_niced, "done", False):
        _niced.done = True
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
