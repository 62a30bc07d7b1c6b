"""Azure AI Speech neural voices over the text-to-speech REST API (no SDK needed).

``POST https://{region}.tts.speech.microsoft.com/cognitiveservices/v1`` with an SSML body,
``X-Microsoft-OutputFormat: raw-24khz-16bit-mono-pcm`` and either ``Ocp-Apim-Subscription-Key``
or an Entra ``Authorization: Bearer`` token (the same auth options as a target, from
harness.auth). Keys and tokens are registered with the log redactor and never put in an error.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from .engines import AZURE_VOICE, EngineError

OUTPUT_FORMAT = "raw-24khz-16bit-mono-pcm"
OUTPUT_RATE = 24000
KEY_ENV, REGION_ENV, ENDPOINT_ENV = "AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION", "AZURE_SPEECH_ENDPOINT"
MAX_ATTEMPTS = 3
MAX_RETRY_AFTER_S = 10.0


@dataclass
class AzureSpeechConfig:
    """Where and how to call the Speech service. ``auth`` holds names of variables, never secrets."""

    region: str | None = None
    endpoint: str | None = None  # full URL; overrides region (custom domain, sovereign cloud, tests)
    auth: Any = field(default=None)  # harness.protocol.endpoint.AuthConfig; default api_key from AZURE_SPEECH_KEY
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "AzureSpeechConfig":
        env = os.environ if env is None else env  # type: ignore[assignment]
        return cls(region=env.get(REGION_ENV) or None, endpoint=env.get(ENDPOINT_ENV) or None)

    def url(self) -> str:
        if self.endpoint:
            return self.endpoint
        if not self.region:
            raise EngineError(f"azure voices need a region: speech.azure.region in the scenario or {REGION_ENV} "
                              f"(or speech.azure.endpoint / {ENDPOINT_ENV})")
        return f"https://{self.region}.tts.speech.microsoft.com/cognitiveservices/v1"

    def auth_config(self) -> Any:
        from ..protocol.endpoint import AuthConfig

        return self.auth or AuthConfig(kind="api_key", api_key_env=KEY_ENV)


def ssml(text: str, voice: str, rate: float, language: str) -> str:
    """The request body: one voice, the rate as a relative prosody percentage."""
    pct = f"{(rate - 1.0) * 100:+.2f}%"
    return (f"<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang={quoteattr(language)}>"
            f"<voice name={quoteattr(voice)}><prosody rate={quoteattr(pct)}>{escape(text)}</prosody></voice></speak>")


class AzureSpeechClient:
    """The ``azure`` engine. One HTTPS request per line; 429/5xx retried (bounded), honouring Retry-After."""

    name = "azure"

    def __init__(self, config: AzureSpeechConfig, *, credential: Any | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.config = config
        self._credential, self._env = credential, env
        self.requests = 0

    def _provider(self) -> Any:
        from ..auth import CredentialProvider

        return CredentialProvider(self.config.auth_config(), credential=self._credential, env=self._env)

    def headers(self) -> dict[str, str]:
        """Auth headers for one request (a bearer token is refreshed by harness.auth before expiry)."""
        from ..auth import AuthError
        from ..redaction import register_secret

        try:
            got = self._provider().headers()
        except AuthError as exc:
            raise EngineError(f"azure speech credentials: {str(exc).replace('target.auth', 'speech.azure.auth')}") from None
        out = {}
        for k, v in got.items():
            register_secret(v.removeprefix("Bearer "))
            out["Ocp-Apim-Subscription-Key" if k == "api-key" else k] = v
        return out

    def check(self, voice: str) -> None:
        url = urllib.parse.urlsplit(self.config.url())
        loopback = url.hostname in ("127.0.0.1", "::1", "localhost")
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise EngineError(f"azure speech endpoint must be https:// (got {url.scheme}://{url.hostname})")
        self.headers()

    def settings(self, voice: str, rate: float) -> dict[str, Any]:
        return {"format": OUTPUT_FORMAT, "rate": round(rate, 4)}

    def language(self, voice: str) -> str:
        parts = voice.split("-")
        return "-".join(parts[:2]) if len(parts) >= 3 else "en-US"

    def synthesize(self, text: str, voice: str, rate: float) -> tuple[np.ndarray, int]:
        voice = voice or AZURE_VOICE
        self.check(voice)
        body = ssml(text, voice, rate, self.language(voice)).encode("utf-8")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            req = urllib.request.Request(self.config.url(), data=body, method="POST", headers={
                "Content-Type": "application/ssml+xml", "X-Microsoft-OutputFormat": OUTPUT_FORMAT,
                "User-Agent": "voiceload", **self.headers()})
            self.requests += 1
            try:
                with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:  # noqa: S310 (https checked)
                    data = resp.read()
                break
            except urllib.error.HTTPError as exc:
                status, retry_after = exc.code, exc.headers.get("Retry-After")
                detail = exc.read(300).decode("utf-8", "replace").strip()
                exc.close()
                if status in (429, 500, 502, 503, 504) and attempt < MAX_ATTEMPTS:
                    time.sleep(_retry_after(retry_after, attempt))
                    continue
                raise EngineError(_explain(status, voice, detail)) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise EngineError(f"azure speech: cannot reach {urllib.parse.urlsplit(self.config.url()).hostname}: "
                                  f"{reason}") from None
        if len(data) < 2:
            raise EngineError(f"azure speech returned no audio for voice {voice!r}")
        pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
        return pcm, OUTPUT_RATE


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value))) if value else min(MAX_RETRY_AFTER_S, 0.5 * 2**attempt)
    except ValueError:
        return min(MAX_RETRY_AFTER_S, 0.5 * 2**attempt)


def _explain(status: int, voice: str, detail: str) -> str:
    why = {400: f"bad request (is {voice!r} a voice of this region? the SSML?)",
           401: "unauthorized: check the key (AZURE_SPEECH_KEY) or the Entra token and its scope",
           403: "forbidden: the identity lacks the Cognitive Services Speech User role, or the key is for "
                "another resource/region",
           404: "not found: check the region or endpoint URL",
           415: "unsupported media type", 429: "throttled (429) after retries"}.get(status, "request failed")
    from ..redaction import redact

    return redact(f"azure speech HTTP {status}: {why}" + (f" ({detail[:200]})" if detail else ""))
