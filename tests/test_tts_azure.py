"""The Azure AI Speech client against a loopback stand-in of the text-to-speech REST endpoint.

The stand-in is written here from the REST reference (POST /cognitiveservices/v1, SSML body,
X-Microsoft-OutputFormat, Ocp-Apim-Subscription-Key or Authorization: Bearer), not from our client:
it checks every header and the SSML, speaks the text with espeak-ng at 24 kHz as raw PCM16, and
can answer 401/400/429 like the service.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from harness import fixtures
from harness.protocol.endpoint import AuthConfig
from harness.tts.azure import AzureSpeechClient, AzureSpeechConfig
from harness.tts.cache import Line, SpeechCache
from harness.tts.engines import EngineError, Engines, Voice

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng speaks for the stand-in")

ROOT = Path(__file__).resolve().parent.parent
KEY = "k3y-" + "0123456789abcdef" * 2
TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLXZhbHVl"
NS = "{http://www.w3.org/2001/10/synthesis}"
VOICES = {"en-US-AvaMultilingualNeural", "de-DE-KatjaNeural"}


class StandIn(http.server.BaseHTTPRequestHandler):
    """One region's TTS endpoint. ``server.plan`` lists forced statuses for the next requests."""

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        srv.seen.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode("utf-8")})
        if self.path != "/cognitiveservices/v1":
            return self._fail(404, "")
        if srv.plan:
            status = srv.plan.pop(0)
            return self._fail(status, "", {"Retry-After": "0"} if status == 429 else {})
        key, bearer = self.headers.get("Ocp-Apim-Subscription-Key"), self.headers.get("Authorization")
        if key != KEY and bearer != f"Bearer {TOKEN}":
            return self._fail(401, "Access denied due to invalid subscription key")
        if self.headers.get("Content-Type") != "application/ssml+xml":
            return self._fail(415, "")
        if self.headers.get("X-Microsoft-OutputFormat") != "raw-24khz-16bit-mono-pcm":
            return self._fail(400, "unsupported output format")
        try:
            speak = ET.fromstring(body)
        except ET.ParseError:
            return self._fail(400, "SSML parse error")
        voice = speak.find(f"{NS}voice")
        if speak.tag != f"{NS}speak" or voice is None or voice.get("name") not in VOICES:
            return self._fail(400, "voice not found")
        prosody = voice.find(f"{NS}prosody")
        rate = 1.0 + float(prosody.get("rate").rstrip("%")) / 100 if prosody is not None else 1.0
        text = "".join(voice.itertext())
        srv.spoken.append((voice.get("name"), rate, text))
        pcm = espeak_24k(text, rate)
        self.send_response(200)
        self.send_header("Content-Type", "audio/x-wav")
        self.send_header("Content-Length", str(len(pcm)))
        self.end_headers()
        self.wfile.write(pcm)

    def _fail(self, status: int, message: str, headers: dict | None = None):
        data = message.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def espeak_24k(text: str, rate: float) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(int(175 * rate)), "-w", str(path), text], check=True)
        x, sr = sf.read(path, dtype="float32")
    y = soxr.resample(x, sr, 24000)
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture()
def standin():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    srv.seen, srv.spoken, srv.plan = [], [], []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(srv, auth: AuthConfig | None = None, env: dict | None = None) -> AzureSpeechClient:
    url = f"http://127.0.0.1:{srv.server_address[1]}/cognitiveservices/v1"
    return AzureSpeechClient(AzureSpeechConfig(endpoint=url, auth=auth),
                             env={"AZURE_SPEECH_KEY": KEY} if env is None else env)


def test_synthesis_request_is_what_the_service_expects(standin):
    c = client(standin)
    x, rate = c.synthesize("Order 4417 & <the> refund.", "en-US-AvaMultilingualNeural", 0.9)
    assert rate == 24000 and len(x) > 24000 * 0.8 and np.abs(x).max() > 0.1
    req = standin.seen[-1]
    h = req["headers"]
    assert h["ocp-apim-subscription-key"] == KEY and "authorization" not in h
    assert h["x-microsoft-outputformat"] == "raw-24khz-16bit-mono-pcm" and h["user-agent"] == "voiceload"
    assert h["content-type"] == "application/ssml+xml"
    assert standin.spoken[-1] == ("en-US-AvaMultilingualNeural", pytest.approx(0.9), "Order 4417 & <the> refund.")
    assert 'xml:lang="en-US"' in req["body"] and 'rate="-10.00%"' in req["body"]


def test_bearer_token_auth_and_the_cache_through_the_engine(standin, tmp_path):
    auth = AuthConfig(kind="token", token_env="SPEECH_TOKEN")
    c = client(standin, auth, env={"SPEECH_TOKEN": TOKEN})
    engines = Engines()
    engines._made["azure"] = c
    cache = SpeechCache(tmp_path / "cache", engines)
    line = Line(text="Guten Tag, ich brauche Hilfe.", voice=Voice("azure", "de-DE-KatjaNeural"))
    fx = cache.get(line)
    assert standin.seen[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert fx.language == "de-DE" and fx.synth == "azure:de-DE-KatjaNeural" and fx.speech_end_ms > fx.speech_start_ms
    assert fixtures.load_manifest(cache.dir)[fx.id].text == line.text
    n = len(standin.seen)
    again = SpeechCache(tmp_path / "cache", engines)
    assert again.get(line).id == fx.id and len(standin.seen) == n  # a hit makes no request


def test_errors_are_explained_retried_and_never_leak_the_key(standin, caplog):
    c = client(standin)
    standin.plan = [429, 503]
    x, _ = c.synthesize("Hello there.", "en-US-AvaMultilingualNeural", 1.0)
    assert len(x) and c.requests == 3  # two retries, Retry-After honoured
    standin.plan = [429, 429, 429]
    with pytest.raises(EngineError, match="429"):
        c.synthesize("Hello there.", "en-US-AvaMultilingualNeural", 1.0)
    with pytest.raises(EngineError, match="bad request.*voice not found") as bad:
        c.synthesize("Hello.", "xx-XX-NobodyNeural", 1.0)
    wrong = client(standin, env={"AZURE_SPEECH_KEY": "wrong-key-" + "x" * 20})
    with pytest.raises(EngineError, match="401: unauthorized") as denied:
        wrong.synthesize("Hello.", "en-US-AvaMultilingualNeural", 1.0)
    with pytest.raises(EngineError, match="AZURE_SPEECH_KEY is not set"):
        client(standin, env={}).synthesize("Hello.", "en-US-AvaMultilingualNeural", 1.0)
    for text in (str(bad.value), str(denied.value), caplog.text):
        assert KEY not in text and "wrong-key" not in text


def test_cli_fixtures_say_with_an_azure_voice(standin, tmp_path):
    url = f"http://127.0.0.1:{standin.server_address[1]}/cognitiveservices/v1"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AZURE_SPEECH_ENDPOINT": url, "AZURE_SPEECH_KEY": KEY}
    out = subprocess.run([sys.executable, "-m", "harness.cli", "fixtures", "say", "I need to change my flight.",
                          "--voice", "azure:en-US-AvaMultilingualNeural", "--rate", "1.1", "--channel", "g711",
                          "--id", "flight", "--dir", str(tmp_path / "fx")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert KEY not in out.stdout + out.stderr
    fx = fixtures.load_manifest(tmp_path / "fx")["flight"]
    assert fx.synth == "azure:en-US-AvaMultilingualNeural rate=1.1 channel=g711" and fx.language == "en-US"
    assert standin.spoken[-1][0] == "en-US-AvaMultilingualNeural"
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "fixtures", "say", "Hi.", "--voice", "azure",
                          "--dir", str(tmp_path / "fx")], cwd=tmp_path,
                         env={**env, "AZURE_SPEECH_KEY": "not-the-key-" + "y" * 20}, capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2 and "401: unauthorized" in bad.stderr and "not-the-key" not in bad.stderr


def test_entra_auth_asks_for_the_speech_scope(standin, tmp_path):
    """kind: entra from the scenario: a token for cognitiveservices (not the Voice Live scope) as Bearer."""
    import time as _time

    from azure.core.credentials import AccessToken

    from harness.scenario import parse_scenario

    asked = []

    class Credential:
        def get_token(self, *scopes, **kw):
            asked.append(scopes)
            return AccessToken(TOKEN, int(_time.time()) + 3600)

    url = f"http://127.0.0.1:{standin.server_address[1]}/cognitiveservices/v1"
    sc = parse_scenario({"speech": {"azure": {"endpoint": url, "auth": {"kind": "entra"}}},
                         "conversation": [{"say": "Hi.", "voice": "azure:en-US-AvaMultilingualNeural"}]},
                        str(tmp_path / "s.yaml"))
    c = AzureSpeechClient(sc.speech.azure, credential=Credential())
    x, _ = c.synthesize("Hello from Entra.", "en-US-AvaMultilingualNeural", 1.0)
    assert len(x) and asked == [("https://cognitiveservices.azure.com/.default",)]
    assert standin.seen[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
