"""The labelling app over HTTP: pages, security, bad input, the CLI, and two raters under load."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tdm_r1.testing.labelkit import login, make_db, page_token

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tdm_r1.cli import app as cli  # noqa: E402
from tdm_r1.label.app import BackgroundServer, create_app  # noqa: E402
from tdm_r1.label.db import LabelDB  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
#: TestClient's default host "testserver" is not one the app serves (DNS rebinding guard)
LOCAL = "http://127.0.0.1"


@pytest.fixture
def db(tmp_path: Path) -> LabelDB:
    return make_db(tmp_path / "likes.sqlite", {"a red circle": 3, "two blue squares": 2})


def _group(db: LabelDB, prompt: str) -> tuple[str, list[str]]:
    g = next(p for p in db.pending(limit=100) if p["prompt"] == prompt)
    return g["id"], [im["id"] for im in db.group(g["id"])["images"]]


def test_a_rater_logs_in_sees_the_next_group_and_labels_it(db: LabelDB) -> None:
    client = TestClient(create_app(db), base_url=LOCAL)
    assert "Who is rating?" in client.get("/").text
    token = login(client, "ann")
    page = client.get("/")
    gid, ids = _group(db, "a red circle")
    assert page.url.path == f"/group/{gid}" and "a red circle" in page.text
    assert (
        all(f'src="/image/{i}"' in page.text for i in ids) and "two blue squares" in page.text
    )  # pending list
    image = client.get(f"/image/{ids[0]}")
    assert image.headers["content-type"] == "image/png" and image.content == db.image(ids[0])[0]
    headers = {"X-Label-Token": token}
    for k, i in enumerate(ids):
        r = client.post(
            "/api/label",
            json={"image_id": i, "group_id": gid, "label": ["like", "dislike"][k % 2]},
            headers=headers,
        )
        assert r.status_code == 200 and r.json()["stored"]
    assert client.post("/api/undo", json={"group_id": gid}, headers=headers).json()["undone"] == ids[-1]
    pending = client.get("/api/pending").json()
    assert pending["rater"] == "ann" and [p["labelled"] for p in pending["pending"]] == [2, 0]
    rates = db.rates(ids)
    assert [rates[i].rate for i in ids[:2]] == [1.0, 0.0] and rates[ids[2]].raters == 0


def _rows(db: LabelDB) -> int:
    return db.stats()["label_rows"]


def test_bad_requests_get_a_reason_and_write_nothing(db: LabelDB) -> None:
    client = TestClient(create_app(db), base_url=LOCAL)
    token = login(client)
    gid, ids = _group(db, "a red circle")
    ok = {"image_id": ids[0], "group_id": gid, "label": "like"}
    h = {"X-Label-Token": token}
    cases = [
        (dict(ok, image_id="ab" * 32), h, 404, "no image"),
        (dict(ok, image_id="../../etc/passwd"), h, 404, "unknown image"),
        (dict(ok, group_id="0" * 32), h, 404, "not in group"),
        (dict(ok, label="meh"), h, 400, "malformed request: label"),
        ({"image_id": ids[0]}, h, 400, "malformed request: group_id"),
        (dict(ok, extra=1), h, 400, "malformed request: extra"),
        (ok, {}, 403, "missing page token"),
        (ok, {"X-Label-Token": "forged"}, 403, "wrong page token"),
    ]
    for body, headers, status, reason in cases:
        r = client.post("/api/label", json=body, headers=headers)
        assert r.status_code == status and reason in r.json()["error"], (body, r.json())
    r = client.post("/api/label", content=b"{oops", headers={**h, "content-type": "application/json"})
    assert r.status_code == 400 and "malformed request" in r.json()["error"]
    assert _rows(db) == 0
    # pages say it on the page
    r = client.get("/image/..%2F..%2Fetc%2Fpasswd")
    assert r.status_code == 404 and 'id="reason"' in r.text
    r = client.get("/group/" + "0" * 32)
    assert r.status_code == 404 and "no group" in r.text
    anonymous = TestClient(create_app(db), base_url=LOCAL)
    assert anonymous.get("/api/pending").status_code == 401
    assert anonymous.post("/login", data={"name": "x"}).status_code == 403  # login needs the page token too


def test_locked_and_read_only_databases_answer_4xx_and_keep_what_is_stored(
    db: LabelDB, tmp_path: Path
) -> None:
    gid, ids = _group(db, "a red circle")
    db.add_label(ids[0], "ann", 1, group_id=gid)
    busy = LabelDB(db.path, timeout=0.2)
    client = TestClient(create_app(busy), base_url=LOCAL)
    token = login(client)
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    r = client.post(
        "/api/label",
        json={"image_id": ids[0], "group_id": gid, "label": "dislike"},
        headers={"X-Label-Token": token},
    )
    other.execute("ROLLBACK")
    assert r.status_code == 423 and "locked by another process" in r.json()["error"]
    ro_client = TestClient(create_app(LabelDB(db.path, readonly=True)), base_url=LOCAL)
    token = login(ro_client)
    r = ro_client.post(
        "/api/label",
        json={"image_id": ids[0], "group_id": gid, "label": "dislike"},
        headers={"X-Label-Token": token},
    )
    assert r.status_code == 403 and "read-only" in r.json()["error"]
    assert _rows(db) == 1 and db.rates([ids[0]])[ids[0]].rate == 1.0


def test_remote_access_needs_a_token(db: LabelDB) -> None:
    result = CliRunner().invoke(cli, ["label", "--db", str(db.path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "refusing to listen on 0.0.0.0 without --token" in result.output
    client = TestClient(create_app(db, access_token="s3cret"), base_url=LOCAL)
    page = client.get("/").text
    assert 'name="access"' in page
    token = page_token(page)
    bad = client.post("/login", data={"name": "ann", "token": token, "access": "guess"})
    assert bad.status_code == 401 and "wrong access token" in bad.text
    assert client.get("/api/pending").status_code == 401
    gid, ids = _group(db, "a red circle")
    assert client.get(f"/image/{ids[0]}").status_code == 401
    good = client.post(
        "/login", data={"name": "ann", "token": token, "access": "s3cret"}, follow_redirects=False
    )
    assert good.status_code == 303
    assert client.get("/api/pending").json()["rater"] == "ann"


def test_cli_registers_a_folder_exports_and_refuses_another_runs_database(tmp_path: Path) -> None:
    runner = CliRunner()
    dbp = tmp_path / "likes.sqlite"
    make_db(dbp, {"p": 2}, run="run-a")
    result = runner.invoke(cli, ["label", "--db", str(dbp), "--stats"])
    assert result.exit_code == 0 and '"groups": 1' in result.output and '"run": "run-a"' in result.output
    run_dir = tmp_path / "runs" / "run-b"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"name: run-b\nreward_options: {{likes: {{db: {dbp}}}}}\n")
    result = runner.invoke(cli, ["label", "--run", str(run_dir), "--stats"])
    assert result.exit_code == 2 and "belongs to run 'run-a', not 'run-b'" in result.output
    # --images with a metadata.jsonl: one group per prompt (the app itself is not started here)
    from tdm_r1.cli.label import image_groups

    groups = image_groups(REPO / "examples" / "sample_images")
    assert len(groups) == 6 and all(len(files) == 1 for _, files, _ in groups)
    fresh = LabelDB(tmp_path / "fresh.sqlite")
    for prompt, files, meta in groups:
        fresh.add_group(prompt, [f.read_bytes() for f in files], metadata=meta)
    assert fresh.stats()["groups"] == 6
    result = runner.invoke(cli, ["label", "--db", str(dbp), "--export", str(tmp_path / "x.txt")])
    assert result.exit_code == 2 and ".csv or .parquet" in result.output
    result = runner.invoke(cli, ["label", "--db", str(tmp_path / "nope" / "x.sqlite"), "--stats"])
    assert result.exit_code == 2 and "no label database" in result.output


def test_two_raters_post_a_thousand_labels_each_concurrently(tmp_path: Path) -> None:
    """Real HTTP on 127.0.0.1: every label stored exactly once, none lost (retries included)."""
    import httpx

    db = make_db(tmp_path / "likes.sqlite", {f"prompt {k}": 10 for k in range(10)})
    groups = [(g["id"], [im["id"] for im in db.group(g["id"])["images"]]) for g in db.pending(limit=100)]
    per_rater = 1000
    errors: list[str] = []

    def rater(name: str, server_url: str) -> None:
        with httpx.Client(base_url=server_url, trust_env=False, timeout=30) as c:
            token = page_token(c.get("/").text)
            c.post("/login", data={"name": name, "token": token})
            for k in range(per_rater):  # bounded: stops by itself
                gid, ids = groups[k % len(groups)]
                body = {
                    "image_id": ids[k // len(groups) % len(ids)],
                    "group_id": gid,
                    "label": "like" if (k // 7) % 2 else "dislike",
                    "client_id": f"{name}-{k}",
                }
                for _attempt in range(2 if k % 50 == 0 else 1):  # some requests are retried
                    r = c.post("/api/label", json=body, headers={"X-Label-Token": token})
                    if r.status_code != 200:
                        errors.append(f"{name} {k}: {r.status_code} {r.text}")

    with BackgroundServer(create_app(LabelDB(db.path, timeout=30))) as server:
        threads = [threading.Thread(target=rater, args=(n, server.url)) for n in ("ann", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert not errors, errors[:3]
    con = sqlite3.connect(db.path)
    assert con.execute("SELECT count(*), count(DISTINCT client_id) FROM labels").fetchone() == (2000, 2000)
    assert dict(con.execute("SELECT rater, count(*) FROM labels GROUP BY rater")) == {
        "ann": 1000,
        "bob": 1000,
    }
    # the current label of every (image, rater) is the last one posted
    last: dict[tuple[str, str], int] = {}
    for k in range(per_rater):
        gid, ids = groups[k % len(groups)]
        last[ids[k // len(groups) % len(ids)], "ann"] = 1 if (k // 7) % 2 else 0
    stored = dict(
        ((i, r), lab)
        for i, r, lab in con.execute(
            "SELECT image_id, rater, label FROM labels l WHERE id = (SELECT max(id) FROM labels m "
            "WHERE m.image_id = l.image_id AND m.rater = l.rater) AND rater = 'ann'"
        )
    )
    assert stored == last
