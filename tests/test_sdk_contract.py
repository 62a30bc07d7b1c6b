"""Contract test: the official azure-ai-voicelive SDK talks to the simulator and parses every event.

If the SDK can connect (URL, query, auth headers), configure the session with its typed models and
receive a complete turn as typed events - never falling back to the untyped base ``ServerEvent`` -
then the simulator speaks the protocol the SDK expects.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

pytest.importorskip("aiohttp")
from azure.ai.voicelive import models as m  # noqa: E402
from azure.ai.voicelive.aio import ConnectionError as VLConnectionError  # noqa: E402
from azure.ai.voicelive.aio import connect  # noqa: E402
from azure.core.credentials import AccessToken, AzureKeyCredential  # noqa: E402

from harness import audio, fixtures  # noqa: E402
from harness.simulator import start_simulator  # noqa: E402

T = m.ServerEventType
AUTH = {"auth": {"required": True, "api_keys": ["sdk-key"], "accept_any_unexpired_jwt": True},
        "audio_pace": {"dist": "fixed", "value": 6.0}}


def jwt(exp_in_s: float = 3600, aud: str = "https://ai.azure.com") -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc({'aud': aud, 'exp': int(time.time() + exp_in_s)})}.sig"


class FakeTokenCredential:
    """An AsyncTokenCredential (the SDK checks the protocol at runtime) that mints JWT-shaped tokens."""

    def __init__(self, exp_in_s: float = 3600) -> None:
        self.exp_in_s = exp_in_s
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(jwt(self.exp_in_s), int(time.time() + self.exp_in_s))

    async def close(self) -> None:
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        pass


def assert_typed(event) -> None:
    """The event and its nested models deserialised to concrete SDK classes."""
    assert type(event) is not m.ServerEvent, f"untyped fallback for {event.type}"
    assert event.type in set(T), event.type
    if event.type in (T.SESSION_CREATED, T.SESSION_UPDATED):
        s = event.session
        assert isinstance(s, m.ResponseSession)
        if s.turn_detection is not None:
            assert type(s.turn_detection) is not m.TurnDetection
    if event.type in (T.RESPONSE_CREATED, T.RESPONSE_DONE):
        assert isinstance(event.response, m.Response) and isinstance(event.response.usage, m.TokenUsage)
        for item in event.response.output or []:
            assert isinstance(item, m.ResponseMessageItem)
            for part in item.content:
                assert type(part) is not m.ContentPart
        if event.response.status_details is not None:
            assert type(event.response.status_details) is not m.ResponseStatusDetails
    if event.type in (T.RESPONSE_OUTPUT_ITEM_ADDED, T.RESPONSE_OUTPUT_ITEM_DONE, T.CONVERSATION_ITEM_CREATED):
        assert type(event.item) not in (m.ResponseItem,)
    if event.type in (T.RESPONSE_CONTENT_PART_ADDED, T.RESPONSE_CONTENT_PART_DONE):
        assert type(event.part) is not m.ContentPart
    if event.type == T.ERROR:
        assert isinstance(event.error, m.ServerEventErrorDetails)


async def one_turn(conn, fixture_id: str, speed: float) -> list:
    """Configure with typed models, speak a fixture, return every event up to response.done."""
    created = await conn.recv()
    assert created.type == T.SESSION_CREATED
    events = [created]
    await conn.session.update(session=m.RequestSession(
        modalities=[m.Modality.TEXT, m.Modality.AUDIO],
        input_audio_format=m.InputAudioFormat.PCM16,
        output_audio_format=m.OutputAudioFormat.PCM16,
        turn_detection=m.ServerVad(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500),
        input_audio_transcription=m.AudioInputTranscriptionOptions(model="azure-speech"),
        voice=m.AzureStandardVoice(name="en-US-Ava:DragonHDLatestNeural"),
    ))
    updated = await asyncio.wait_for(conn.recv(), 5)
    assert updated.type == T.SESSION_UPDATED, updated
    events.append(updated)
    fmt = audio.input_format()
    frames = fixtures.frames(fixture_id, fmt, 20).frames + fixtures.silence_frames(fmt, 20, count=50)

    async def speak():
        t0 = time.monotonic()
        for i, f in enumerate(frames):
            await conn.input_audio_buffer.append(audio=f)
            if speed:
                await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.02 / speed - time.monotonic()))

    speaker = asyncio.create_task(speak())
    while True:
        event = await asyncio.wait_for(conn.recv(), 15)
        events.append(event)
        if event.type == T.RESPONSE_DONE:
            break
    await speaker
    # the transcription may trail the response
    if not any(e.type == T.CONVERSATION_ITEM_INPUT_AUDIO_TRANSCRIPTION_COMPLETED for e in events):
        events.append(await asyncio.wait_for(conn.recv(), 5))
    return events


def check_turn(events, fixture_id: str) -> None:
    for e in events:
        assert_typed(e)
    types = [e.type for e in events]
    order = [T.INPUT_AUDIO_BUFFER_SPEECH_STARTED, T.INPUT_AUDIO_BUFFER_SPEECH_STOPPED, T.INPUT_AUDIO_BUFFER_COMMITTED,
             T.RESPONSE_CREATED, T.RESPONSE_OUTPUT_ITEM_ADDED, T.RESPONSE_CONTENT_PART_ADDED, T.RESPONSE_AUDIO_DELTA,
             T.RESPONSE_AUDIO_DONE, T.RESPONSE_AUDIO_TRANSCRIPT_DONE, T.RESPONSE_CONTENT_PART_DONE,
             T.RESPONSE_OUTPUT_ITEM_DONE, T.RESPONSE_DONE]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    assert types.count(T.RESPONSE_AUDIO_DONE) == 1
    done = events[types.index(T.RESPONSE_DONE)]
    assert done.response.status == m.ResponseStatus.COMPLETED
    assert done.response.usage.output_token_details.audio_tokens > 0
    tr = next(e for e in events if e.type == T.CONVERSATION_ITEM_INPUT_AUDIO_TRANSCRIPTION_COMPLETED)
    assert tr.transcript == fixtures.get_fixture(fixture_id).text
    first_delta = next(e for e in events if e.type == T.RESPONSE_AUDIO_DELTA)
    assert isinstance(first_delta.delta, bytes) and len(first_delta.delta) > 0  # SDK decodes base64
    upd = events[1].session
    assert isinstance(upd.turn_detection, m.ServerVad) and upd.turn_detection.prefix_padding_ms == 300
    # The SDK leaves union-typed fields (voice) as mappings; the echo must still be what it sent.
    assert upd.voice["type"] == "azure-standard" and upd.voice["name"] == "en-US-Ava:DragonHDLatestNeural"


def test_sdk_model_mode_with_api_key_real_time():
    async def main(port):
        async with connect(credential=AzureKeyCredential("sdk-key"), endpoint=f"http://127.0.0.1:{port}",
                           model="gpt-realtime") as conn:
            return await one_turn(conn, "cs_order_status", speed=1.0)

    with start_simulator("ideal", overrides=AUTH) as sim:
        events = asyncio.run(main(sim.port))
    check_turn(events, "cs_order_status")
    assert events[0].session.model == "gpt-realtime" and events[0].session.id.startswith("sess_")


def test_sdk_agent_mode_with_bearer_token():
    cred = FakeTokenCredential()

    async def main(port):
        async with connect(credential=cred, endpoint=f"http://127.0.0.1:{port}", agent_name="concierge",
                           project_name="demo-project", agent_version="2") as conn:
            return await one_turn(conn, "car_eta", speed=4.0)

    with start_simulator("ideal", overrides=AUTH) as sim:
        events = asyncio.run(main(sim.port))
    check_turn(events, "car_eta")
    agent = events[0].session.agent
    assert isinstance(agent, m.AgentConfig) and agent.name == "concierge" and agent.type == "agent"
    assert cred.scopes == [("https://ai.azure.com/.default",)]


@pytest.mark.parametrize("credential", [AzureKeyCredential("wrong-key"), FakeTokenCredential(exp_in_s=-60)],
                         ids=["bad-key", "expired-token"])
def test_sdk_sees_401_when_auth_is_required(credential):
    async def main(port):
        async with connect(credential=credential, endpoint=f"http://127.0.0.1:{port}", model="gpt-realtime"):
            pass

    with start_simulator("ideal", overrides=AUTH) as sim:
        with pytest.raises(VLConnectionError, match="401"):
            asyncio.run(main(sim.port))


def test_sdk_cancel_and_error_events_are_typed():
    async def main(port):
        async with connect(credential=AzureKeyCredential("x"), endpoint=f"http://127.0.0.1:{port}",
                           model="gpt-realtime", api_version="2025-10-01") as conn:
            created = await conn.recv()
            await conn.response.cancel()
            err = await conn.recv()
            await conn.session.update(session={"turn_detection": {"type": "server_vad", "threshold": 3}})
            err2 = await conn.recv()
            await conn.response.create()
            events = []
            while True:
                e = await asyncio.wait_for(conn.recv(), 10)
                events.append(e)
                if e.type == T.RESPONSE_AUDIO_DELTA:
                    await conn.response.cancel()
                if e.type == T.RESPONSE_DONE:
                    return created, err, err2, events

    with start_simulator("ideal") as sim:
        created, err, err2, events = asyncio.run(main(sim.port))
    for e in (created, err, err2, *events):
        assert_typed(e)
    assert created.session.turn_detection.prefix_padding_ms == 300  # pre-2026-04-10 default
    assert err.error.code == "response_cancel_not_active"
    assert err2.error.param == "session.turn_detection.threshold"
    done = events[-1].response
    assert done.status == m.ResponseStatus.CANCELLED
    assert isinstance(done.status_details, m.ResponseCancelledDetails) and done.status_details.reason == "client_cancelled"


@pytest.mark.parametrize("api_version", ["2026-07-15", "2026-06-01-preview"])
def test_sdk_parses_the_cascaded_order_and_the_optional_events(api_version):
    """A cascaded model (gpt-4.1): transcription completed before the user's item, the transcript before
    the audio; warning, word-timestamp and viseme events typed; rate_limits.updated (documented, not in
    the SDK enum) the only untyped one. session.created per api-version: agent null, expires_at only
    from 2026-07-15."""
    over = {**AUTH, "rate_limits_event": True, "warning_event": True, "audio_timestamp_events": True,
            "viseme_events": True, "quotas": "azure_s0"}

    async def main(port):
        async with connect(credential=AzureKeyCredential("sdk-key"), endpoint=f"http://127.0.0.1:{port}",
                           model="gpt-4.1", api_version=api_version) as conn:
            return await one_turn(conn, "car_eta", speed=4.0)

    with start_simulator("ideal", overrides=over) as sim:
        events = asyncio.run(main(sim.port))
    rate_limits = [e for e in events if e.type == "rate_limits.updated"]
    assert len(rate_limits) == 1 and {r["name"] for r in rate_limits[0]["rate_limits"]} == {"requests", "tokens"}
    events = [e for e in events if e.type != "rate_limits.updated"]
    check_turn(events, "car_eta")
    types = [e.type for e in events]
    user_item = types.index(T.CONVERSATION_ITEM_CREATED)
    assert types[user_item - 1] == T.CONVERSATION_ITEM_INPUT_AUDIO_TRANSCRIPTION_COMPLETED
    assert types[user_item - 2] == T.INPUT_AUDIO_BUFFER_COMMITTED
    assert types.index(T.RESPONSE_AUDIO_TRANSCRIPT_DELTA) < types.index(T.RESPONSE_AUDIO_DELTA)
    assert T.CONVERSATION_ITEM_INPUT_AUDIO_TRANSCRIPTION_DELTA not in types
    for t in (T.WARNING, T.RESPONSE_AUDIO_TIMESTAMP_DELTA, T.RESPONSE_AUDIO_TIMESTAMP_DONE,
              T.RESPONSE_ANIMATION_VISEME_DELTA, T.RESPONSE_ANIMATION_VISEME_DONE):
        assert t in types, t
    stamp = next(e for e in events if e.type == T.RESPONSE_AUDIO_TIMESTAMP_DELTA)
    assert stamp.text and stamp.audio_duration_ms > 0 and stamp.timestamp_type == "word"
    session = events[0].session
    assert session.agent is None and session.model == "gpt-4.1"
    assert (session.expires_at is not None) == (api_version == "2026-07-15")
