"""The labelling app against other sites, other raters and oversized requests (issue: "no label
from another site", items 1-4). Each test failed before the guard existed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tdm_r1.testing.labelkit import login, make_db, page_token

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tdm_r1.label.app import BackgroundServer, create_app  # noqa: E402
from tdm_r1.label.db import LabelDB  # noqa: E402

LOCAL = "http://127.0.0.1"
EVIL = "http://attacker.example"


@pytest.fixture
def db(tmp_path: Path) -> LabelDB:
    return make_db(tmp_path / "likes.sqlite", {"a red circle": 3})


def _first(db: LabelDB) -> tuple[str, list[str]]:
    gid = db.pending(limit=1)[0]["id"]
    return gid, [im["id"] for im in db.group(gid)["images"]]


def _label(client: TestClient, token: str, image: str, gid: str, **extra: object) -> object:
    body = {"image_id": image, "group_id": gid, "label": "like", **extra}
    return client.post("/api/label", json=body, headers={"X-Label-Token": token})


# ------------------------------------------------------------------------- 1: DNS rebinding
def test_a_forged_host_gets_no_page_and_no_token(db: LabelDB) -> None:
    evil = TestClient(create_app(db), base_url=f"{EVIL}:8765")
    r = evil.get("/")
    assert r.status_code == 421 and "label-token" not in r.text and "attacker.example" in r.json()["error"]
    assert evil.post("/login", data={"name": "x", "token": "t"}).status_code == 421
    assert evil.get("/healthz").status_code == 421
    # the names the app was started for are served: bind address, localhost, --allowed-host
    app = create_app(db, host="10.1.2.3", allowed_host=["labels.lab.example"])
    for url in (
        "http://10.1.2.3:8765",
        "http://localhost:8765",
        "http://[::1]:8765",
        "http://LABELS.lab.example",
    ):
        assert TestClient(app, base_url=url).get("/healthz").status_code == 200, url
    assert TestClient(app, base_url=EVIL).get("/healthz").status_code == 421


def test_a_post_from_another_sites_page_is_refused(db: LabelDB) -> None:
    client = TestClient(create_app(db), base_url=LOCAL)
    token = login(client, "ann")
    gid, ids = _first(db)
    for header in ({"Origin": EVIL}, {"Referer": f"{EVIL}/page"}, {"Origin": "null"}):
        r = client.post(
            "/api/label",
            json={"image_id": ids[0], "group_id": gid, "label": "like"},
            headers={"X-Label-Token": token, **header},
        )
        assert r.status_code == 403 and "another site" in r.json()["error"], (header, r.text)
        r = client.post(
            "/login", data={"name": "eve", "token": token}, headers=header, follow_redirects=False
        )
        assert r.status_code == 403, header
    assert db.stats()["label_rows"] == 0
    # the app's own pages (any port of an allowed name) are fine
    r = _label(client, token, ids[0], gid)
    assert r.status_code == 200
    own = client.post(
        "/api/undo",
        json={"group_id": gid},
        headers={"X-Label-Token": token, "Origin": "http://127.0.0.1:8765"},
    )
    assert own.status_code == 200 and own.json()["undone"] == ids[0]


def test_a_forged_host_header_over_real_http(db: LabelDB) -> None:
    """The issue's curl: ``Host: attacker.example:PORT`` on the loopback address."""
    import httpx

    with BackgroundServer(create_app(db)) as server, httpx.Client(base_url=server.url, trust_env=False) as c:
        r = c.get("/", headers={"Host": f"attacker.example:{server.port}"})
        assert r.status_code == 421 and "label-token" not in r.text
        assert c.get("/").status_code == 200


# --------------------------------------------------------------------- 2: client ids per rater
def test_another_raters_client_id_stores_his_own_label(db: LabelDB) -> None:
    app = create_app(db)
    alice, bob = TestClient(app, base_url=LOCAL), TestClient(app, base_url=LOCAL)
    token = login(alice, "alice")
    login(bob, "bob")
    gid, ids = _first(db)
    first = _label(alice, token, ids[0], gid, client_id="sim:alice:x")
    assert first.status_code == 200 and first.json()["stored"]
    r = _label(bob, token, ids[0], gid, client_id="sim:alice:x", label="dislike")
    assert (
        r.status_code == 200
        and r.json()["stored"]
        and r.json()["label"] == 0
        and r.json()["id"] != first.json()["id"]
    )
    assert _label(alice, token, ids[0], gid, client_id="sim:alice:x").json()["stored"] is False  # a retry
    r = _label(alice, token, ids[0], gid, client_id="sim:alice:x", label="dislike")
    assert r.status_code == 409 and "already used for another label" in r.json()["error"]
    assert db.rates([ids[0]])[ids[0]].raters == 2 and db.stats()["label_rows"] == 2


# ---------------------------------------------------------------------------- 3: bounded input
def test_fields_are_bounded_and_big_bodies_are_413(db: LabelDB) -> None:
    client = TestClient(create_app(db), base_url=LOCAL)
    token = login(client)
    gid, ids = _first(db)
    for cid, status in (("c" * 129, 400), ("bad id", 400), ("c" * 5_000_000, 413)):
        r = _label(client, token, ids[0], gid, client_id=cid)
        assert r.status_code == status, (len(cid), r.text[:200])
    assert "client_id" in _label(client, token, ids[0], gid, client_id="c" * 129).json()["error"]
    assert _label(client, token, ids[0], gid, group_id="g" * 5000).status_code == 400
    assert db.stats()["label_rows"] == 0
    # a rater name forged into the cookie is bounded too
    forged = TestClient(client.app, base_url=LOCAL, cookies={"tdm_rater": "n" * 5000})
    r = _label(forged, token, ids[0], gid)
    assert r.status_code == 400 and "longer than 64" in r.json()["error"]


def _raw(url_port: int, head: str) -> str:
    """Send only the request head (no body) and return the status line: answered at once means
    the body was never waited for."""
    with socket.create_connection(("127.0.0.1", url_port), timeout=10) as s:
        s.sendall(head.encode())
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_size_and_token_are_checked_before_the_body_is_read(db: LabelDB) -> None:
    with BackgroundServer(create_app(db)) as server:
        host = f"Host: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        huge = f"POST /api/label HTTP/1.1\r\n{host}X-Label-Token: x\r\nContent-Length: 80000000\r\n\r\n"
        assert " 413 " in _raw(server.port, huge)
        untokened = f"POST /api/label HTTP/1.1\r\n{host}Content-Length: 900\r\n\r\n"
        assert " 403 " in _raw(server.port, untokened)


# --------------------------------------------------------------------- 4: session, not token
def test_the_access_cookie_is_a_session_id_and_secure_over_tls(db: LabelDB) -> None:
    client = TestClient(create_app(db, access_token="s3cret"), base_url=LOCAL)
    token = page_token(client.get("/").text)
    r = client.post(
        "/login", data={"name": "ann", "token": token, "access": "s3cret"}, follow_redirects=False
    )
    assert r.status_code == 303
    sid = client.cookies.get("tdm_access")
    assert sid and "s3cret" not in sid and "s3cret" not in r.headers["set-cookie"]
    assert client.get("/api/pending").status_code == 200
    forged = TestClient(client.app, base_url=LOCAL, cookies={"tdm_access": "s3cret", "tdm_rater": "ann"})
    assert forged.get("/api/pending").status_code == 401  # the token itself is no session
    tls = TestClient(client.app, base_url="https://127.0.0.1")
    token = page_token(tls.get("/").text)
    r = tls.post("/login", data={"name": "ann", "token": token, "access": "s3cret"}, follow_redirects=False)
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 2 and all("secure" in c.lower() for c in cookies)
    assert all("secure" not in c.lower() for c in client.post(
        "/login", data={"name": "ann", "token": token, "access": "s3cret"}, follow_redirects=False
    ).headers.get_list("set-cookie"))  # fmt: skip
