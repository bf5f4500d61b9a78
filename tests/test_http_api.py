"""The HTTP API (chateau/web_api.py) with a real HTTP client (requests, in a
thread) against real servers: in-process on SQLite and PostgreSQL, and two
clustered ``twistd`` nodes. WebSocket clients watch what a POST delivers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import requests
from openapi_spec_validator import validate
from twisted.internet.threads import deferToThread

from chateau import messages
from chateau.web_api import ROUTES, openapi_document
from tests.conftest import RunningServer
from tests.deferreds import inline
from tests.test_cluster import two_nodes, wait_presence  # noqa: F401 (a fixture)
from tests.wsclient import Client, connect


def base_of(running: RunningServer) -> str:
    return running.http_url.rstrip("/")


async def call(
    base: str, method: str, path: str, key: str | None = None, **kwargs: Any
) -> requests.Response:
    """One request from a thread (the reactor serves the server meanwhile)."""
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return await deferToThread(
        requests.request, method, base + path, headers=headers, timeout=15, **kwargs
    )


async def signed_in(running: RunningServer, name: str) -> tuple[Client, str]:
    client = await running.client()
    reply = await client.register(name)
    return client, reply["session_key"]


async def group_of(owner: Client, chatname: str, *others: Client) -> None:
    reply = await owner.request({"type": "GroupMessageInitRequest", "chatname": chatname,
                                 "recipients": [other.username for other in others]})
    assert reply["status"] == 200, reply
    for other in others:
        notice = await other.recv()
        assert notice["type"] == "GroupMessageInitResponse", notice


def chats(name: str) -> str:
    return f"/api/chats/{quote(name, safe='')}/messages"


def direct(name: str) -> str:
    return f"/api/direct/{quote(name, safe='')}/messages"


def json_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json; charset=utf-8", response.headers
    return response.json()


@inline
async def test_every_route_needs_a_live_key(server):
    base = base_of(server)
    alice, alice_key = await signed_in(server, "alice")
    assert (await call(base, "GET", direct("alice"), alice_key)).status_code == 200
    # A key signed out on its WebSocket is dead over HTTP at once.
    assert (await alice.request({"type": "LogoutRequest"}))["status"] == 200
    for route in ROUTES:
        path = route.template.replace("{chatname}", "club").replace("{username}", "alice")
        for key in (None, "not-a-key", "x" * 300, alice_key):
            response = await call(base, route.method, path, key, json={"content": "hi"})
            assert response.status_code == 401, (route, key, response.text)
            assert response.headers["www-authenticate"] == 'Bearer realm="chateau"'
            assert json_of(response)["status"] == 401


@inline
async def test_a_post_to_a_group_is_stored_before_201_and_reaches_members_at_once(server):
    base = base_of(server)
    alice, alice_key = await signed_in(server, "alice")
    bob, bob_key = await signed_in(server, "bob")
    await group_of(alice, "café club", bob)
    response = await call(base, "POST", chats("café club"), alice_key,
                          json={"content": "meet at 5 ☕"})
    assert response.status_code == 201, response.text
    sent = json_of(response)
    assert set(sent) == {"status", "id", "timestamp"} and sent["status"] == 201
    # Online members get it at once, the sender's own WebSocket too (it is
    # not the connection that sent it).
    for member in (bob, alice):
        push = await member.expect("GroupMessageRecv", sender="alice", content="meet at 5 ☕")
        assert push["id"] == sent["id"] and push["chatname"] == "café club"
    # Stored before the 201: history has it, over HTTP and over the WebSocket.
    page = json_of(await call(base, "GET", chats("café club"), bob_key))
    assert page["status"] == 200 and page["chatname"] == "café club"
    assert page["messages"][0]["id"] == sent["id"]
    assert page["messages"][0]["content"] == "meet at 5 ☕"
    assert "type" not in page and "msg_id" not in page
    ws_page = await bob.request({"type": "HistoryRequest", "chatname": "café club"})
    assert ws_page["messages"] == page["messages"]
    # A JSON body sent as a form (curl -d does so) is still the JSON body.
    response = await call(base, "POST", chats("café club"), bob_key, data=b'{"content": "a form"}',
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 201, response.text
    await alice.expect("GroupMessageRecv", content="a form")
    # Paging: limit and before.
    second = json_of(await call(base, "POST", chats("café club"), bob_key,
                                json={"content": "ok"}))
    await alice.expect("GroupMessageRecv", content="ok")
    newest = json_of(await call(base, "GET", chats("café club") + "?limit=1", alice_key))
    assert [m["id"] for m in newest["messages"]] == [second["id"]] and newest["more"] is True
    older = json_of(await call(base, "GET", chats("café club"), alice_key,
                               params={"limit": "2", "before": str(second["id"])}))
    assert [m["content"] for m in older["messages"]] == ["a form", "meet at 5 ☕"]
    assert older["more"] is False


@inline
async def test_a_direct_post_reaches_the_recipient_and_history_has_it(server):
    base = base_of(server)
    alice, alice_key = await signed_in(server, "alice")
    bob, bob_key = await signed_in(server, "bob")
    response = await call(base, "POST", direct("bob"), alice_key, json={"content": "psst"})
    assert response.status_code == 201, response.text
    sent = json_of(response)
    push = await bob.expect("MessageRecv", sender="alice", content="psst")
    assert push["id"] == sent["id"]
    # As over a WebSocket, a direct message goes to the recipient only.
    await alice.nothing(0.2)
    for key, other in ((bob_key, "alice"), (alice_key, "bob")):
        page = json_of(await call(base, "GET", direct(other), key))
        assert page["user"] == other and [m["id"] for m in page["messages"]] == [sent["id"]]
    # To someone offline: stored, and theirs at sign-in.
    await bob.close()
    json_of(await call(base, "POST", direct("bob"), alice_key, json={"content": "later"}))
    bob_again = await server.client()
    await bob_again.register("bob")
    missed = await bob_again.recv()
    assert missed["content"] == "later", missed


@inline
async def test_refusals_have_the_websockets_statuses_and_details(server):
    base = base_of(server)
    alice, alice_key = await signed_in(server, "alice")
    bob, _ = await signed_in(server, "bob")
    carol, carol_key = await signed_in(server, "carol")
    await group_of(alice, "club", bob)

    async def refused(status: int, method: str, path: str, key: str, **kwargs: Any) -> str:
        response = await call(base, method, path, key, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        body = json_of(response)
        assert body["status"] == status and set(body) >= {"status", "detail"}, body
        return body["detail"]

    # 403: not a member, as over the WebSocket.
    detail = await refused(403, "POST", chats("club"), carol_key, json={"content": "hi"})
    ws = await carol.request({"type": "MessageRequest", "recipient": "club", "content": "hi"})
    assert ws["status"] == 403 and ws["detail"] == detail
    detail = await refused(403, "GET", chats("club"), carol_key)
    ws = await carol.request({"type": "HistoryRequest", "chatname": "club"})
    assert ws["detail"] == detail
    # 404: no such group or user; a user's name is no chat, a group's no user.
    assert "no such group" in await refused(404, "GET", chats("nowhere"), alice_key)
    assert "no such group" in await refused(404, "POST", chats("nowhere"), alice_key,
                                            json={"content": "hi"})
    assert "no such group" in await refused(404, "POST", chats("bob"), alice_key,
                                            json={"content": "hi"})
    assert "no such user" in await refused(404, "GET", direct("nobody"), alice_key)
    assert "no such user" in await refused(404, "POST", direct("nobody"), alice_key,
                                           json={"content": "hi"})
    assert "no such user" in await refused(404, "POST", direct("club"), alice_key,
                                           json={"content": "hi"})
    # 400: the body.
    assert "not valid JSON" in await refused(400, "POST", chats("club"), alice_key,
                                             data=b"{content: hi")
    assert "JSON object" in await refused(400, "POST", chats("club"), alice_key, json=["hi"])
    assert "'content'" in await refused(400, "POST", chats("club"), alice_key, json={})
    assert "'content'" in await refused(400, "POST", chats("club"), alice_key,
                                        json={"content": 5})
    assert "empty" in await refused(400, "POST", chats("club"), alice_key, json={"content": ""})
    assert "surrogate" in await refused(400, "POST", chats("club"), alice_key,
                                        data=b'{"content": "\\ud800"}')
    # 400: the query string.
    detail = await refused(400, "GET", chats("club") + "?limit=0", alice_key)
    ws = await alice.request({"type": "HistoryRequest", "chatname": "club", "limit": 0})
    assert ws["detail"] == detail
    assert "integer" in await refused(400, "GET", chats("club") + "?limit=ten", alice_key)
    assert "integer" in await refused(400, "GET", chats("club") + "?before=99999999999999999999",
                                      alice_key)
    assert "unknown query parameter 'colour'" in await refused(
        400, "GET", chats("club") + "?colour=red", alice_key)
    assert "more than once" in await refused(
        400, "GET", chats("club") + "?limit=1&limit=2", alice_key)
    assert "unknown query parameter" in await refused(
        400, "POST", chats("club") + "?limit=1", alice_key, json={"content": "hi"})
    # 413: content over [chat] max_content_length (16384 characters), as over the WebSocket.
    detail = await refused(413, "POST", chats("club"), alice_key, json={"content": "x" * 16385})
    ws = await alice.request({"type": "MessageRequest", "recipient": "club",
                              "content": "x" * 16385})
    assert ws["detail"] == detail
    # Routes and methods.
    assert "no such API route" in await refused(404, "GET", "/api/chats/club", alice_key)
    response = await call(base, "DELETE", chats("club"), alice_key)
    assert response.status_code == 405 and response.headers["allow"] == "GET, POST"
    # Nothing was stored or delivered by any of it.
    page = json_of(await call(base, "GET", chats("club"), alice_key))
    assert page["messages"] == []
    await bob.nothing(0.2)


@inline
async def test_a_body_over_max_request_body_is_413(server_factory, config_factory):
    running = await server_factory(config_factory(limits={"max_request_body": "1000"}))
    _, key = await signed_in(running, "alice")
    response = await call(base_of(running), "POST", direct("alice"), key,
                          json={"content": "x" * 2000})
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]


@inline
async def test_posts_keep_the_message_rate_of_their_session_key(server_factory, config_factory):
    running = await server_factory(config_factory(
        limits={"message_rate": "0.5", "message_burst": "2"}))
    base = base_of(running)
    _, alice_key = await signed_in(running, "alice")
    bob, bob_key = await signed_in(running, "bob")
    for number in range(2):
        response = await call(base, "POST", direct("bob"), alice_key, json={"content": f"{number}"})
        assert response.status_code == 201, response.text
    response = await call(base, "POST", direct("bob"), alice_key, json={"content": "more"})
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "2"
    body = json_of(response)
    assert body["status"] == 429 and 0 < body["retry_after"] <= 2
    # Another key has its own bucket; reading takes no token.
    response = await call(base, "POST", direct("alice"), bob_key, json={"content": "hi"})
    assert response.status_code == 201
    response = await call(base, "GET", direct("bob"), alice_key)
    assert [m["content"] for m in json_of(response)["messages"]] == ["hi", "1", "0"]
    assert [f["content"] for f in [await bob.recv(), await bob.recv()]] == ["0", "1"]
    await bob.nothing(0.2)


@inline
async def test_without_stored_messages_the_routes_answer_501(server_factory, config_factory):
    running = await server_factory(config_factory(chat={"store_messages": "false"}))
    base = base_of(running)
    alice, alice_key = await signed_in(running, "alice")
    bob, _ = await signed_in(running, "bob")
    await group_of(alice, "club", bob)
    for method, path in (("POST", chats("club")), ("POST", direct("bob")),
                         ("GET", chats("club")), ("GET", direct("bob"))):
        response = await call(base, method, path, alice_key, json={"content": "hi"})
        assert response.status_code == 501, (method, path, response.text)
    await bob.nothing(0.2)


# -- the OpenAPI document --------------------------------------------------------


@inline
async def test_the_openapi_document_is_valid_and_lists_every_route(server):
    response = await call(base_of(server), "GET", "/api/openapi.json")
    assert response.status_code == 200
    document = json_of(response)
    validate(document)
    served = {(route.method.lower(), route.template) for route in ROUTES} | {
        ("get", "/api/users/{username}"), ("get", "/api/me/export"),
        ("get", "/api/openapi.json"),
    }
    described = {
        (method, path) for path, item in document["paths"].items()
        for method in item if method in ("get", "post", "put", "patch", "delete")
    }
    assert described == served
    # Every /api/ child the site mounts is described.
    api = server.service.site.resource.children[b"api"]
    mounted = {name.decode() for name in api.children}
    assert mounted == {path.split("/")[2] for _, path in served}


def test_every_route_names_a_request_type_the_server_has():
    """A route whose request type is missing answers 501: this says which."""
    missing = [route.request_type for route in ROUTES
               if route.request_type not in messages.REQUEST_TYPES]
    assert missing == []


def test_the_documented_query_parameters_are_the_requests_fields():
    """The document's parameters are those the server takes: HistoryRequest's
    before_time, after and after_time (Sync's) included."""
    document = json.loads(openapi_document())
    for route in ROUTES:
        if route.method != "GET" or route.request_type not in messages.REQUEST_TYPES:
            continue
        operation = document["paths"][route.template]["get"]
        documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        taken = set(route.query_fields(messages.REQUEST_TYPES[route.request_type]))
        assert documented == taken, route.template


# -- a cluster -------------------------------------------------------------------


@inline
async def test_a_post_on_one_node_reaches_members_on_another_at_once(two_nodes):
    alice = await connect(two_nodes.url("n1"))
    two_nodes.clients.append(alice)
    key = (await alice.register("alice"))["session_key"]
    bob = await two_nodes.client("n2", "bob")
    await wait_presence(two_nodes, alice, "bob")
    await group_of(alice, "spread", bob)
    n1 = f"http://127.0.0.1:{two_nodes.nodes['n1'].port}"
    n2 = f"http://127.0.0.1:{two_nodes.nodes['n2'].port}"
    # The key of alice's sign-in on n1 serves on n2 as on n1.
    response = await call(n2, "POST", chats("spread"), key, json={"content": "from n2"})
    assert response.status_code == 201, response.text
    for member in (bob, alice):
        push = await member.expect("GroupMessageRecv", content="from n2")
        assert push["id"] == response.json()["id"]
    response = await call(n1, "POST", direct("bob"), key, json={"content": "dm from n1"})
    assert response.status_code == 201, response.text
    await bob.expect("MessageRecv", content="dm from n1", sender="alice")
    page = json_of(await call(n2, "GET", direct("bob"), key))
    assert [m["content"] for m in page["messages"]] == ["dm from n1"]
    await two_nodes.close()


@inline
async def test_conversations_over_http_are_the_websockets(server):
    base = base_of(server)
    alice, alice_key = await signed_in(server, "alice")
    bob, bob_key = await signed_in(server, "bob")
    await group_of(alice, "club", bob)
    assert (await call(base, "POST", chats("club"), bob_key, json={"content": "one"})).ok
    await alice.expect("GroupMessageRecv", content="one")
    await bob.expect("GroupMessageRecv", content="one")
    assert (await call(base, "POST", direct("alice"), bob_key, json={"content": "two"})).ok
    await alice.expect("MessageRecv", content="two")
    page = json_of(await call(base, "GET", "/api/conversations", alice_key))
    assert page["status"] == 200 and page["more"] is False, page
    assert [c.get("user", c.get("chatname")) for c in page["conversations"]] == ["bob", "club"]
    assert page["conversations"][0]["last_message"]["content"] == "two"
    ws = await alice.request({"type": "ConversationsRequest"})
    assert ws["conversations"] == page["conversations"]
    first = json_of(await call(base, "GET", "/api/conversations?limit=1", alice_key))
    assert first["more"] is True and len(first["conversations"]) == 1
    before = first["conversations"][0]["activity"]
    rest = json_of(await call(base, "GET", f"/api/conversations?limit=1&before={before}",
                              alice_key))
    assert [c.get("chatname") for c in rest["conversations"]] == ["club"]
    response = await call(base, "GET", "/api/conversations?limit=0", alice_key)
    assert response.status_code == 400 and json_of(response)["status"] == 400


@inline
async def test_history_by_id_and_time_over_http(server):
    base = base_of(server)
    _, alice_key = await signed_in(server, "alice")
    bob, _ = await signed_in(server, "bob")
    sent = []
    for content in ("one", "two", "three"):
        response = await call(base, "POST", direct("bob"), alice_key, json={"content": content})
        sent.append(json_of(response))
    path = direct("bob")

    async def contents(query: str) -> list[str]:
        page = json_of(await call(base, "GET", path + query, alice_key))
        assert page["status"] == 200, page
        return [m["content"] for m in page["messages"]]

    # after / after_time: oldest first; before_time: newest first.
    assert await contents(f"?after={sent[0]['id']}") == ["two", "three"]
    assert await contents("?after_time=2000-01-01T00:00:00Z&limit=2") == ["one", "two"]
    assert await contents("?before_time=2999-01-01T00:00:00.000Z") == ["three", "two", "one"]
    assert await contents("?before_time=2000-01-01T00:00:00%2B00:00") == []
    for query, word in (("?before_time=yesterday", "before_time"),
                        ("?after_time=2026-13-01T00:00:00Z", "after_time"),
                        (f"?after={sent[0]['id']}&before=9", "")):
        response = await call(base, "GET", path + query, alice_key)
        assert response.status_code == 400, (query, response.text)
        assert word in json_of(response)["detail"]
