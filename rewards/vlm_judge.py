"""VLM-as-judge reward (``vlm-judge``, alias ``unifiedreward``) over an OpenAI-compatible server.

The judge is any vision-language model served behind the chat-completions API (sglang or vLLM
serving ``CodeGoat24/UnifiedReward-7b-v1.5`` as in Flow-GRPO, or another VLM). Each image is
resized to 512x512, sent as a base64 PNG data URL with a prompt asking for a 1-5 "Final Score",
with ``temperature=0``; the answer's ``Final Score: X`` (X in 1-5) gives the score X/5, in
[0.2, 1]. Only the standard library is used (urllib + json): no ``openai`` package.

Failures: a server that cannot be reached after the retries, or that answers with something that
is not chat-completions JSON, raises :class:`~tdm_r1.errors.TdmError` naming the URL; one answer
without a parsable score gives NaN with reason "unparseable answer" (Flow-GRPO scores it 0) and the
raw answer in the ``answer`` column.

Prompt template and comparability: the judging question is a template with a ``{prompt}``
placeholder, tdmbench's own by default (:data:`DEFAULT_TEMPLATE`) or the user's
(``template_file=PATH``, or ``prompt_template=TEXT``). The sha256 of the template text is part of
the reward's identity (``version`` = ``2-<model>-tpl<sha256[:12]>``, and the score-cache key), so
scores from different templates are never mixed. A published judge column (UnifiedReward in
Flow-GRPO's tables) is comparable only to scores made with the template those numbers used:
:data:`PUBLISHED_TEMPLATES` lists the known ones by sha256. No public source we found gives the
published template text or hash, so it is empty and every judge column is marked "not comparable:
custom/unknown template" (:func:`template_status`).

Serve UnifiedReward e.g. with
``python -m sglang.launch_server --model-path CodeGoat24/UnifiedReward-7b-v1.5 --port 17140
--api-key $TDMBENCH_VLM_API_KEY --chat-template chatml-llava``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from tdm_r1.errors import ConfigError, TdmError
from tdm_r1.images import to_pil
from tdm_r1.registry import register_reward
from tdm_r1.rewards.base import NAN_REASON, Reward, RewardOutput

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:17140/v1"
DEFAULT_MODEL = "CodeGoat24/UnifiedReward-7b-v1.5"
SCORE_REGEX = r"Final Score:\s*([1-5](?:\.\d+)?)"
UNPARSEABLE = "unparseable answer"

#: Default judging prompt (UnifiedReward style: free-text reasoning ending in "Final Score: X").
DEFAULT_TEMPLATE = (
    "You are judging an image that a text-to-image model generated from this prompt:\n"
    '"{prompt}"\n'
    "Assess (1) how faithfully the image shows what the prompt asks for (objects, counts, "
    "attributes, spatial relations, written text) and (2) its visual quality (coherence, "
    "artefacts, aesthetics). Reason briefly, then end with one line of the exact form\n"
    "Final Score: X\n"
    "where X is a number from 1 (very poor) to 5 (excellent)."
)


#: sha256 of prompt templates known to have produced published judge numbers -> what published
#: them. Empty: no public source we found gives the text or the hash of Flow-GRPO's UnifiedReward
#: question, so no template can be shown to match it.
PUBLISHED_TEMPLATES: dict[str, str] = {}


def template_sha256(template: str) -> str:
    """sha256 hex of the template text (UTF-8), as used: the file's bytes decoded, unchanged."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def read_template(path: str | Path) -> str:
    """A prompt-template file's text; a one-line ConfigError if it is missing or lacks ``{prompt}``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"vlm-judge template_file {str(file)!r} does not exist or is not a file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"vlm-judge template_file {str(file)!r} is not readable UTF-8 text: {exc}") from exc
    if "{prompt}" not in text:
        raise ConfigError(f"vlm-judge template_file {str(file)!r} must contain the placeholder {{prompt}}")
    return text


def template_status(version: str) -> str:
    """Comparability of a judge score with published judge columns, from its reward ``version``:
    ``"official"`` when its template hash is in :data:`PUBLISHED_TEMPLATES`, else ``"not
    comparable: custom/unknown template (sha256 <12 hex>)"``."""
    match = re.search(r"-tpl([0-9a-f]{12,64})$", version)
    if match is None:
        return "not comparable: custom/unknown template (hash not recorded)"
    short = match.group(1)
    if any(h.startswith(short) for h in PUBLISHED_TEMPLATES):
        return "official"
    return f"not comparable: custom/unknown template (sha256 {short})"


class _Retryable(Exception):
    """A transient failure (connection, timeout, HTTP 429/5xx): try again."""


def parse_score(answer: str, pattern: str = SCORE_REGEX) -> float:
    """``Final Score: X`` -> X / 5; NaN when the answer has no score."""
    match = re.search(pattern, answer)
    return float(match.group(1)) / 5.0 if match else math.nan


def png_data_url(image: Any, size: int = 512) -> str:
    """A PIL image resized to ``size`` x ``size`` (bicubic) as a ``data:image/png;base64`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    image.resize((size, size), Image.Resampling.BICUBIC).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@register_reward("vlm-judge", aliases=("unifiedreward",))
class VlmJudge(Reward):
    """Score images with a VLM behind an OpenAI-compatible chat-completions endpoint.

    Args:
        base_url: API root (default ``$TDMBENCH_VLM_URL`` or http://127.0.0.1:17140/v1).
        model: served model name (default ``$TDMBENCH_VLM_MODEL`` or UnifiedReward-7b-v1.5).
        api_key: bearer token (default ``$TDMBENCH_VLM_API_KEY``; none sent when unset).
        prompt_template: question text with a ``{prompt}`` placeholder (replaced literally; other
            braces are kept as they are).
        template_file: a UTF-8 file holding the question template (overrides ``prompt_template``).
        score_regex: regex whose group 1 is the 1-5 score.
        image_size: images are resized to this square size before sending.
        max_concurrency: requests in flight at once (threads).
        timeout: seconds per request.
        max_retries: retries of a failed request (connection, timeout, HTTP 429/5xx).
        backoff: first retry delay in seconds, doubled each retry.
        max_tokens: answer length limit.

    Detail columns: ``answer`` (the raw text).
    """

    name = "vlm-judge"
    base_version = "2"  # 2: template hash in the identity
    higher_is_better = True
    scale = "VLM judge 'Final Score' (1-5) / 5, in [0.2, 1]"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        prompt_template: str = DEFAULT_TEMPLATE,
        template_file: str | Path | None = None,
        score_regex: str = SCORE_REGEX,
        image_size: int = 512,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 512,
    ) -> None:
        self.base_url = (base_url or os.environ.get("TDMBENCH_VLM_URL") or DEFAULT_URL).rstrip("/")
        self.model = model or os.environ.get("TDMBENCH_VLM_MODEL") or DEFAULT_MODEL
        self._api_key = api_key if api_key is not None else os.environ.get("TDMBENCH_VLM_API_KEY")
        if template_file is not None:
            prompt_template = read_template(template_file)
        if "{prompt}" not in prompt_template:
            raise ConfigError("vlm-judge prompt_template must contain the placeholder {prompt}")
        try:
            re.compile(score_regex)
        except re.error as exc:
            raise ConfigError(f"vlm-judge score_regex {score_regex!r} is not a valid regex: {exc}") from exc
        if int(max_concurrency) < 1 or int(max_retries) < 0:
            raise ConfigError("vlm-judge needs max_concurrency >= 1 and max_retries >= 0")
        self.prompt_template = prompt_template
        self.score_regex = score_regex
        self.image_size = int(image_size)
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_tokens = int(max_tokens)
        self.template_sha256 = template_sha256(prompt_template)

    def version_suffix(self) -> str:
        return f"-{self.model}-tpl{self.template_sha256[:12]}"

    @classmethod
    def key_version(cls, options: Mapping[str, Any]) -> str:
        """The identity used in score-cache keys, known without building the judge: the class
        version plus the template's hash (a template file edited in place gets new keys)."""
        if options.get("template_file") is not None:
            text = read_template(options["template_file"])
        else:
            text = str(options.get("prompt_template", DEFAULT_TEMPLATE))
        return f"{cls.base_version}-tpl{template_sha256(text)[:12]}"

    def comparability(self) -> str:
        """See :func:`template_status`."""
        return template_status(self.version)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def __repr__(self) -> str:  # never show the key
        return f"VlmJudge(base_url={self.base_url!r}, model={self.model!r})"

    # ------------------------------------------------------------------------------ HTTP
    def _post_once(self, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from exc
            raise TdmError(
                f"the VLM judge at {self.endpoint} refused the request with HTTP {exc.code}: {detail!r}. "
                f"Check the URL (base_url or $TDMBENCH_VLM_URL, ending in /v1), the model name "
                f"({self.model!r}, option model or $TDMBENCH_VLM_MODEL) and the API key ($TDMBENCH_VLM_API_KEY)."
            ) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TdmError(
                f"the VLM judge at {self.endpoint} answered something that is not an OpenAI chat-completions "
                f"response ({type(exc).__name__}: {exc}; body starts {raw[:200]!r}). Check that base_url points "
                "at an OpenAI-compatible server (sglang / vLLM) and ends in /v1."
            ) from exc
        if not isinstance(content, str):
            raise TdmError(
                f"the VLM judge at {self.endpoint} returned a non-text message content: {content!r}"
            )
        return {"content": content}

    def ask(self, prompt: str, image: Any) -> str:
        """One chat completion for ``prompt`` + PIL ``image``; retries transient failures."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": png_data_url(image, self.image_size)}},
                            {"type": "text", "text": self.prompt_template.replace("{prompt}", prompt)},
                        ],
                    }
                ],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(body)["content"]
            except _Retryable as exc:
                last = str(exc)
                if attempt < self.max_retries:
                    delay = self.backoff * 2**attempt
                    log.warning("VLM judge request failed (%s); retry %d in %.2fs", last, attempt + 1, delay)
                    time.sleep(delay)
        raise TdmError(
            f"the VLM judge at {self.endpoint} is not answering after {self.max_retries + 1} attempts "
            f"(last error: {last}). Check that the server is running and reachable (e.g. `curl "
            f"{self.base_url}/models`), and the URL (option base_url or $TDMBENCH_VLM_URL)."
        )

    # ---------------------------------------------------------------------------- reward
    def score(self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]) -> RewardOutput:
        pils = to_pil(images)
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(pils))))
        try:
            futures = [pool.submit(self.ask, p, im) for p, im in zip(prompts, pils, strict=True)]
            answers = [f.result() for f in futures]
        finally:  # on the first hard failure, drop the requests not yet started
            pool.shutdown(wait=True, cancel_futures=True)
        scores = torch.tensor([parse_score(a, self.score_regex) for a in answers], dtype=torch.float32)
        reasons = [UNPARSEABLE if math.isnan(float(s)) else "" for s in scores]
        for a, r in zip(answers, reasons, strict=True):
            if r:
                log.warning("VLM judge answer without a score: %r", a[:200])
        return RewardOutput(scores, {"answer": answers, NAN_REASON: reasons})
