from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch
from PIL import Image

from tdm_r1.errors import TdmError
from tdm_r1.registry import REWARDS
from tdm_r1.rewards.vlm_judge import VlmJudge, parse_score


class ScriptedServer:
    """A tiny OpenAI-compatible chat-completions server; answers are scripted per prompt text."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, str]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                owner.headers.append(dict(self.headers))
                text = body["messages"][0]["content"][1]["text"]
                key = next(k for k in owner.script if k in text)
                status, payload = (
                    owner.script[key].pop(0) if len(owner.script[key]) > 1 else owner.script[key][0]
                )
                data = (
                    payload.encode()
                    if status != 200 or payload.startswith("RAW:")
                    else json.dumps(
                        {"choices": [{"index": 0, "message": {"role": "assistant", "content": payload}}]}
                    ).encode()
                )
                data = data.removeprefix(b"RAW:")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer()
    yield s
    s.close()


def imgs(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 40, 60, generator=torch.Generator().manual_seed(0))


def test_parse_score() -> None:
    assert parse_score("Reasoning... Final Score: 5") == 1.0
    assert parse_score("Final Score:3.75 overall") == pytest.approx(0.75)
    assert math.isnan(parse_score("Final Score: 6"))
    assert math.isnan(parse_score("I'd give it a 4"))


def test_scores_request_format_and_key(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDMBENCH_VLM_API_KEY", "secret-token")
    server.script = {
        "a red cube": [(200, "Looks right.\nFinal Score: 4")],
        "a cat": [(200, "Final Score: 2.5")],
    }
    judge = REWARDS.get("unifiedreward")(base_url=server.url, model="judge-model", max_concurrency=2)
    assert isinstance(judge, VlmJudge) and "secret" not in repr(judge)
    out = judge(images=imgs(2), prompts=["a red cube", "a cat"])
    assert out.scores.tolist() == pytest.approx([0.8, 0.5])
    assert out.details["answer"] == ["Looks right.\nFinal Score: 4", "Final Score: 2.5"]
    assert out.details["nan_reason"] == ["", ""]
    body = server.requests[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (512, 512)
    assert all(h.get("Authorization") == "Bearer secret-token" for h in server.headers)


def test_unparseable_answer_is_nan_with_raw_text(server: ScriptedServer) -> None:
    server.script = {"good": [(200, "Final Score: 5")], "bad": [(200, "I cannot judge this image.")]}
    out = VlmJudge(base_url=server.url)(images=imgs(2), prompts=["good", "bad"])
    assert out.scores[0].item() == 1.0 and math.isnan(out.scores[1].item())
    assert out.details["nan_reason"] == ["", "unparseable answer"]
    assert out.details["answer"][1] == "I cannot judge this image."


def test_retry_after_server_error(server: ScriptedServer) -> None:
    server.script = {"flaky": [(500, "overloaded"), (200, "Final Score: 3")]}
    out = VlmJudge(base_url=server.url, backoff=0.01)(images=imgs(1), prompts=["flaky"])
    assert out.scores.tolist() == pytest.approx([0.6])
    assert len(server.requests) == 2


def test_persistent_errors_and_garbage_raise(server: ScriptedServer) -> None:
    server.script = {"always": [(503, "down")]}
    with pytest.raises(TdmError, match=r"not answering after 3 attempts.*HTTP 503"):
        VlmJudge(base_url=server.url, max_retries=2, backoff=0.01)(images=imgs(1), prompts=["always"])
    assert len(server.requests) == 3
    server.script = {"json": [(200, "RAW:<html>not json</html>")]}
    with pytest.raises(TdmError, match=f"{server.url}/chat/completions answered something that is not"):
        VlmJudge(base_url=server.url)(images=imgs(1), prompts=["json"])
    server.script = {"missing": [(404, "no such model")]}
    with pytest.raises(TdmError, match="HTTP 404.*model name"):
        VlmJudge(base_url=server.url)(images=imgs(1), prompts=["missing"])


def test_server_down(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("TDMBENCH_VLM_URL", f"http://127.0.0.1:{port}/v1")
    judge = VlmJudge(max_retries=1, backoff=0.01)
    assert judge.base_url == f"http://127.0.0.1:{port}/v1"
    with pytest.raises(TdmError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions is not answering.*running"):
        judge(images=imgs(2), prompts=["a", "b"])


def test_prompt_template_must_have_placeholder() -> None:
    from tdm_r1.errors import ConfigError

    with pytest.raises(ConfigError, match="placeholder"):
        VlmJudge(prompt_template="rate this image")


def test_non_http_answer_raises() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1]
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(b"this is not HTTP at all\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(TdmError, match=r"not answering after 2 attempts.*BadStatusLine"):
            VlmJudge(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.01)(
                images=imgs(1), prompts=["x"]
            )
    finally:
        thread.join(timeout=5)
        listener.close()


def test_template_file_is_sent_and_its_hash_is_the_identity(server: ScriptedServer, tmp_path: Any) -> None:
    import hashlib

    from tdm_r1.errors import ConfigError
    from tdm_r1.eval.reward_jobs import RewardJob
    from tdm_r1.rewards import vlm_judge

    text = 'Rate {prompt} on {"scale": "1-5"}. End with "Final Score: X".\n'
    path = tmp_path / "judge.txt"
    path.write_text(text, encoding="utf-8")
    server.script = {"a red cube": [(200, "Final Score: 4")]}
    judge = VlmJudge(base_url=server.url, model="m", template_file=str(path))
    assert judge(images=imgs(1), prompts=["a red cube"]).scores.tolist() == pytest.approx([0.8])
    sent = server.requests[0]["messages"][0]["content"][1]["text"]
    assert sent == text.replace("{prompt}", "a red cube")  # other braces kept as written
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert judge.template_sha256 == sha and judge.version == f"2-m-tpl{sha[:12]}"
    default = VlmJudge(base_url=server.url, model="m")
    assert default.version != judge.version and default.version.startswith("2-m-tpl")

    # The score-cache key sees the file's content, so an edited template never reuses old scores.
    job = RewardJob("vlm-judge", VlmJudge, {"template_file": str(path)}, optional=True)
    first = job.key_identity
    assert first == f"vlm-judge@2-tpl{sha[:12]}"
    path.write_text(text + "Be strict.\n", encoding="utf-8")
    assert job.key_identity != first

    # No published template is known: every judge column is marked not comparable.
    assert vlm_judge.PUBLISHED_TEMPLATES == {}
    assert judge.comparability() == f"not comparable: custom/unknown template (sha256 {sha[:12]})"
    assert default.comparability().startswith("not comparable: custom/unknown template")
    # A template recorded as published would make the column comparable.
    vlm_judge.PUBLISHED_TEMPLATES[sha] = "test"
    try:
        assert judge.comparability() == "official"
    finally:
        vlm_judge.PUBLISHED_TEMPLATES.pop(sha)

    with pytest.raises(ConfigError, match="does not exist"):
        VlmJudge(template_file=str(tmp_path / "nope.txt"))
    (tmp_path / "bad.txt").write_text("rate this image", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.txt' must contain the placeholder \{prompt\}"):
        VlmJudge(template_file=str(tmp_path / "bad.txt"))
