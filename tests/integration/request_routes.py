"""The request routes of the operator API (PROTOCOL.md §12), exercised against openapi.yaml.

Called by tests/integration/test_openapi.py's real-node test with its checking client, so
that every answer these routes give is validated against the document, down to the errors.
"""

from __future__ import annotations

from typing import Any

from tests.integration.harness import Node, wait_until


def exercise_request_routes(api: Any, atl: Node, bor: Node) -> None:
    route, one = "/v1/requests", "/v1/requests/{member}/{id}"
    wait_until(lambda: atl.get("/v1/status")["authors"] >= 2, timeout=30,
               what="ATL holds BOR's node.keys")
    assert api(atl, "GET", route, 200) == {"inbox": [], "outbox": [], "refused": [],
                                           "unacknowledged": 0}
    sent = api(atl, "POST", route, 201, body={
        "to": "BOR", "type": "information-request", "subject": "Routes", "text": "hello",
        "urgency": "priority", "attachments": ["ab" * 32], "to_domain": "technical"})
    assert sent["push"] == "accepted" and sent["state"] == "sent"
    url = f"/v1/requests/ATL/{sent['id']}"
    wait_until(lambda: atl.get(url)["state"] == "delivered", timeout=30,
               what="BOR's receipt at ATL")
    assert api(atl, "GET", one, 200, url=url)["via"] == "direct"
    assert api(bor, "GET", route, 200)["unacknowledged"] == 1
    # Refusals, each with its code.
    for body, code in (({"to": "ZZZ", "type": "other", "subject": "x"}, "unknown_author"),
                       ({"to": "BOR", "type": "bogus", "subject": "x"}, "invalid_body"),
                       ({"to": "ATL", "type": "other", "subject": "x"}, "invalid_request"),
                       ({"to": "BOR", "type": "other", "subject": 3}, "malformed"),
                       ({"to": "BOR", "type": "other", "subject": "x", "text": "y" * 8001},
                        "oversize")):
        status = {"unknown_author": 404, "oversize": 413}.get(code, 400)
        assert api(atl, "POST", route, status, body=body)["code"] == code, body
    assert api(atl, "GET", one, 404, url="/v1/requests/ATL/" + "00" * 16)["code"] == \
        "not_found"
    answer = api(atl, "GET", one, 400, url="/v1/requests/ATL/xyz")
    assert (answer["code"], answer["path"]) == ("malformed", "id")
    burl = f"/v1/requests/ATL/{sent['id']}"
    assert api(atl, "POST", one, 403, url=burl, body={"state": "acknowledged"})["code"] == \
        "not_party"
    assert api(bor, "POST", one, 400, url=burl, body={"state": "delivered"})["code"] == \
        "malformed"
    assert api(bor, "POST", one, 400, url=burl, body={"state": "publish",
                                                       "scope": "all"})["code"] == \
        "invalid_request"
    assert api(bor, "POST", one, 413, url=burl, body={"state": "declined",
                                                       "text": "n" * 8001})["code"] == \
        "oversize"
    assert api(bor, "POST", one, 404, url="/v1/requests/ATL/" + "00" * 16,
               body={"state": "acknowledged"})["code"] == "not_found"
    api(bor, "POST", one, 201, url=burl, body={"state": "acknowledged"})
    assert api(bor, "POST", one, 409, url=burl, body={"state": "acknowledged"})["code"] == \
        "no_change"
    api(bor, "POST", one, 201, url=burl, body={"state": "answered", "text": "yes"})
    assert api(bor, "POST", one, 409, url=burl, body={"state": "declined"})["code"] == \
        "out_of_order"
    wait_until(lambda: atl.get(url)["state"] == "answered", timeout=30,
               what="BOR's answer at ATL")
    shown = api(atl, "GET", one, 200, url=url)
    assert [t["state"] for t in shown["timeline"]] == ["sent", "delivered", "acknowledged",
                                                       "answered"]
    # Both sides consent to publish: the exchange is visible to members.
    api(atl, "POST", one, 201, url=burl, body={"state": "publish"})
    api(bor, "POST", one, 201, url=burl, body={"state": "publish", "scope": "content"})
    for node in (atl, bor):
        wait_until(lambda n=node: n.get("/v1/exchanges")["exchanges"], timeout=30,
                   what=f"the exchange published, at {node.member}")
    (exchange,) = api(bor, "GET", "/v1/exchanges", 200)["exchanges"]
    assert exchange["scope"] == "metadata" and exchange["sender"] == "ATL"
    # Ping campaigns.
    assert api(atl, "POST", "/v1/ping", 404, body={"members": ["ZZZ"]})["code"] == \
        "unknown_author"
    assert api(atl, "POST", "/v1/ping", 400, body={"domain": "space"})["code"] == "malformed"
    for bad in ({"members": None}, {"members": []}, {"domain": None}):
        refusal = api(atl, "POST", "/v1/ping", 400, body=bad)   # not "everyone"
        assert refusal["code"] == "malformed" and refusal["path"] == next(iter(bad)), refusal
    campaign = api(atl, "POST", "/v1/ping", 201, body={"domain": "technical"})
    assert [s["member"] for s in campaign["sent"]] == ["BOR"]
    wait_until(lambda: atl.get("/v1/ping")["members"][0]["delivered"], timeout=30,
               what="the ping's receipt")
    report = api(atl, "GET", "/v1/ping", 200)
    assert report["members"][0]["member"] == "BOR"
    assert api(atl, "GET", route, 200)["outbox"]
