"""The list that replaces Autobahn's send deque on an open connection keeps its order."""

from chateau.protocol import SendQueue


def test_send_queue_is_first_in_first_out_like_autobahns_deque() -> None:
    queue = SendQueue()
    assert not queue and len(queue) == 0
    queue.append((b"one", True))
    queue.append((b"two", False))
    assert len(queue) == 2
    assert queue.popleft() == (b"one", True)
    assert queue.popleft() == (b"two", False)
    assert not queue
