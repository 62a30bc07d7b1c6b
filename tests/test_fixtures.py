"""Manifest validation, add_fixture conversions and rejections, shared frames, and the reply bank."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from harness import audio, fixtures
from harness.fixtures import FixtureError, add_fixture, frames, load_manifest, silence_frames
from harness.simulator.replies import load_replies

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = load_manifest()


def test_fixture_set() -> None:
    clean = [f for f in FIXTURES.values() if f.variant_of is None]
    noisy = [f for f in FIXTURES.values() if f.variant_of is not None]
    assert len(clean) >= 12 and len(noisy) >= 4
    assert {f.use_case for f in clean} == {"customer_service", "in_car", "language_tutor"}
    assert len({f.language for f in clean if not f.language.startswith("en")}) >= 3
    assert all(f.snr_db is not None and FIXTURES[f.variant_of].text == f.text for f in noisy)
    assert sum(p.stat().st_size for p in (ROOT / "audio_fixtures").glob("*.wav")) < 6_000_000
    for f in FIXTURES.values():
        x = f.samples()
        assert x.dtype == np.int16 and x.ndim == 1 and len(x) * 1000 // 24000 == f.duration_ms
        assert f.samples() is x  # loaded once
    listed = sorted(yaml.safe_load((ROOT / "audio_fixtures/manifest.yaml").read_text())["fixtures"], key=lambda r: r["id"])
    assert [r["id"] for r in listed] == sorted(FIXTURES)


def test_manifest_matches_the_audio() -> None:
    """Bounds and fingerprints in the manifest are what the code computes today (regenerate if not)."""
    from harness.vad import speech_bounds

    for f in FIXTURES.values():
        assert speech_bounds(f.samples(), 24000) == (f.speech_start_ms, f.speech_end_ms), f.id
        assert audio.fingerprint(f.samples(), 24000) == f.fingerprint, f.id


# --- malformed manifests ---------------------------------------------------------------------------


@pytest.fixture()
def fixture_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fx"
    d.mkdir()
    for fid in ("car_call_mom", "cs_double_charge"):
        shutil.copy(ROOT / "audio_fixtures" / f"{fid}.wav", d)
    rows = [FIXTURES[fid].to_dict() for fid in ("car_call_mom", "cs_double_charge")]
    (d / "manifest.yaml").write_text(yaml.safe_dump({"fixtures": rows}, sort_keys=False))
    return d


def rewrite(d: Path, edit) -> None:
    doc = yaml.safe_load((d / "manifest.yaml").read_text())
    edit(doc)
    (d / "manifest.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def test_valid_copy_loads(fixture_dir: Path) -> None:
    got = load_manifest(fixture_dir)
    assert sorted(got) == ["car_call_mom", "cs_double_charge"]
    assert np.array_equal(got["car_call_mom"].samples(), FIXTURES["car_call_mom"].samples())


def test_error_message_format(fixture_dir: Path) -> None:
    rewrite(fixture_dir, lambda doc: doc["fixtures"][1].update(speech_end_ms="abc"))
    with pytest.raises(FixtureError) as err:
        load_manifest(fixture_dir)
    assert str(err.value) == f"{fixture_dir.as_posix()}/manifest.yaml: fixtures[1].speech_end_ms: expected an integer, got 'abc'"
    assert (err.value.field, err.value.message) == ("fixtures[1].speech_end_ms", "expected an integer, got 'abc'")


@pytest.mark.parametrize(
    "edit, field, words",
    [
        (lambda doc: doc["fixtures"][0].pop("text"), "fixtures[0].text", "missing"),
        (lambda doc: doc["fixtures"][0].update(colour="red"), "fixtures[0].colour", "unknown field"),
        (lambda doc: doc["fixtures"][0].update(duration_ms=True), "fixtures[0].duration_ms", "expected an integer"),
        (lambda doc: doc["fixtures"][0].update(snr_db="loud"), "fixtures[0].snr_db", "expected a number"),
        (lambda doc: doc["fixtures"][1].update(id="car_call_mom"), "fixtures[1].id", "duplicate id"),
        (lambda doc: doc["fixtures"][1].update(id="Bad Id!"), "fixtures[1].id", "invalid id"),
        (lambda doc: doc["fixtures"][0].update(file="missing.wav"), "fixtures[0].file", "no such file"),
        (lambda doc: doc["fixtures"][0].update(speech_end_ms=10**6), "fixtures[0].speech_end_ms", "speech_start_ms < speech_end_ms"),
        (lambda doc: doc["fixtures"][0].update(duration_ms=5000), "fixtures[0].duration_ms", "does not match"),
        (lambda doc: doc["fixtures"][0].update(variant_of="nope"), "fixtures[0].variant_of", "unknown fixture"),
        (lambda doc: doc.update(fixtures={"a": 1}), "fixtures", "list"),
    ],
)
def test_malformed_manifest(fixture_dir: Path, edit, field: str, words: str) -> None:
    rewrite(fixture_dir, edit)
    with pytest.raises(FixtureError) as err:
        load_manifest(fixture_dir)
    assert err.value.field == field and words in err.value.message, str(err.value)
    assert str(err.value).startswith(f"{fixture_dir.as_posix()}/manifest.yaml: ")


def test_wrong_wav_format_and_bad_yaml(fixture_dir: Path) -> None:
    sf.write(fixture_dir / "car_call_mom.wav", np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(FixtureError, match=r"fixtures\[0\]\.file: car_call_mom.wav: expected 24000 Hz mono PCM_16, got 16000 Hz"):
        load_manifest(fixture_dir)
    (fixture_dir / "manifest.yaml").write_text("fixtures: [\n")
    with pytest.raises(FixtureError, match="invalid YAML"):
        load_manifest(fixture_dir)
    with pytest.raises(FixtureError, match="no such file"):
        load_manifest(fixture_dir / "nowhere")


# --- add_fixture -----------------------------------------------------------------------------------


def test_add_fixture_converts_flac_and_ogg(tmp_path: Path) -> None:
    src = FIXTURES["cs_order_status"]
    x = src.samples().astype(np.float64) / 32768
    stereo = np.stack([audio.resample(x, 24000, 44100), audio.resample(x, 24000, 44100) * 0.8], axis=1)
    sf.write(tmp_path / "Order Status.flac", stereo, 44100)
    sf.write(tmp_path / "tutor.ogg", audio.resample(FIXTURES["tutor_fr_cafe"].samples().astype(np.float64) / 32768, 24000, 16000), 16000)
    d = tmp_path / "fx"
    a = add_fixture(tmp_path / "Order Status.flac", src.text, directory=d, use_case="customer_service")
    b = add_fixture(tmp_path / "tutor.ogg", "Bonjour", fixture_id="fr-cafe", directory=d, language="fr-FR")
    assert (a.id, b.id) == ("order_status", "fr-cafe")
    info = sf.info(d / "order_status.wav")
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    assert abs(a.speech_start_ms - src.speech_start_ms) <= 20 and abs(a.speech_end_ms - src.speech_end_ms) <= 40
    assert abs(a.duration_ms - src.duration_ms) <= 2
    table = load_manifest(d)
    assert list(table) == ["fr-cafe", "order_status"]  # kept sorted
    assert table["order_status"] == a
    candidates = {f.id: f.fingerprint for f in FIXTURES.values()}
    assert audio.match(table["fr-cafe"].samples(), 24000, candidates)[0] == "tutor_fr_cafe"
    assert audio.match(FIXTURES["cs_order_status"].samples(), 24000, {"x": a.fingerprint, "y": b.fingerprint})[0] == "x"


@pytest.mark.parametrize("kind", ["not_audio", "empty", "silent", "too_long", "duplicate", "bad_id"])
def test_add_fixture_rejects(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "fx"
    good = tmp_path / "good.wav"
    sf.write(good, FIXTURES["car_call_mom"].samples(), 24000, subtype="PCM_16")
    add_fixture(good, "Call Mom.", fixture_id="existing", directory=d)
    before = (d / "manifest.yaml").read_bytes()
    src, fid, words = tmp_path / f"{kind}.wav", None, ""
    if kind == "not_audio":
        src.write_text("this is not audio\n")
        words = "cannot read audio"
    elif kind == "empty":
        sf.write(src, np.zeros(0, np.int16), 24000, subtype="PCM_16")
        words = "empty"
    elif kind == "silent":
        sf.write(src, np.zeros(48000, np.int16), 48000, subtype="PCM_16")
        words = "no speech"
    elif kind == "too_long":
        sf.write(src, np.zeros(8000 * 61, np.int16), 8000, subtype="PCM_16")
        words = "too long"
    elif kind == "duplicate":
        src, fid, words = good, "existing", "duplicate id"
    else:
        src, fid, words = good, "No/Slashes", "invalid id"
    with pytest.raises(FixtureError) as err:
        add_fixture(src, "text", fixture_id=fid, directory=d)
    assert words in str(err.value)
    named = "manifest.yaml" if kind == "duplicate" else src.name
    assert named in str(err.value)
    assert (d / "manifest.yaml").read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["existing.wav", "manifest.yaml"]


# --- shared frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pcm16", "pcm16_16000hz", "g711_ulaw", "g711_alaw"])
def test_frames_are_shared_and_decode_back(name: str) -> None:
    fmt = audio.input_format(*(("pcm16", 16000) if name == "pcm16_16000hz" else (name,)))
    fx = FIXTURES["car_temperature"]
    fs = frames("car_temperature", fmt)
    assert frames("car_temperature", fmt, 20) is fs
    assert frames("car_temperature", fmt, 20, gain_db=-3.0) is not fs
    assert (fs.chunk_ms, fs.speech_start_ms, fs.speech_end_ms, fs.duration_ms) == (
        20, fx.speech_start_ms, fx.speech_end_ms, fx.duration_ms)
    chunks = [base64.b64decode(c) for c in fs.frames]
    whole = audio.encode(fx.samples(), fmt)
    assert {len(c) for c in chunks} == {fmt.bytes_for_ms(20)}
    assert len(chunks) == -(-len(whole) // fmt.bytes_for_ms(20))  # last chunk padded, none extra
    data = b"".join(chunks)
    assert data[: len(whole)] == whole
    assert set(data[len(whole) :]) <= {audio.silence_byte(fmt)[0]}
    if name == "pcm16":
        assert np.array_equal(audio.decode(data, fmt)[: len(fx.samples())], fx.samples())


def test_frames_perturbations() -> None:
    fmt = audio.input_format()
    fx = FIXTURES["cs_double_charge"]
    clean = fx.samples().astype(np.float64)
    noisy = audio.decode(b"".join(base64.b64decode(c) for c in frames(fx.id, fmt, snr_db=10.0, seed=3).frames), fmt)
    noisy = noisy[: len(clean)].astype(np.float64)
    s, e = fx.speech_start_ms * 24, fx.speech_end_ms * 24
    snr = 10 * np.log10(np.mean(clean[s:e] ** 2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 0.5
    assert frames(fx.id, fmt, snr_db=10.0, seed=3) is not frames(fx.id, fmt, snr_db=10.0, seed=4)
    loud = audio.decode(b"".join(base64.b64decode(c) for c in frames(fx.id, fmt, gain_db=20.0).frames), fmt)
    loud = loud[: len(clean)].astype(np.float64)
    assert loud.max() <= 32767 and loud.min() >= -32768
    quiet_part = np.abs(clean) < 1000
    assert np.allclose(loud[quiet_part], clean[quiet_part] * 10, atol=2)  # scaled, not wrapped
    assert np.all(np.sign(loud[~quiet_part]) == np.sign(clean[~quiet_part]))  # clipped, not wrapped
    with pytest.raises(KeyError, match="unknown fixture"):
        frames("nope", fmt)


def test_silence_frames() -> None:
    ulaw = audio.input_format("g711_ulaw")
    digital = silence_frames(ulaw)
    assert len(digital) == 50 and silence_frames(ulaw) is digital
    assert set(base64.b64decode(digital[0])) == {0xFF} and len(base64.b64decode(digital[0])) == 160
    fmt = audio.input_format("pcm16", 16000)
    tone = silence_frames(fmt, 20, level_dbfs=-50.0, seed=1, count=100)
    assert len(tone) == 100 and silence_frames(fmt, 20, level_dbfs=-50.0, seed=1, count=100) is tone
    x = audio.decode(b"".join(base64.b64decode(c) for c in tone), fmt).astype(np.float64)
    assert abs(20 * np.log10(np.sqrt(np.mean(x**2)) / 32768) + 50) < 1.5


# --- reply bank ------------------------------------------------------------------------------------


def test_reply_bank() -> None:
    replies = load_replies()
    assert len(replies) >= 8 and {r.use_case for r in replies} == {"customer_service", "in_car", "language_tutor"}
    pcm = audio.output_format("pcm16")
    for r in replies:
        assert r.samples.dtype == np.int16 and 2000 <= r.duration_ms <= 6000
        assert 50 <= r.leading_silence_ms <= 210
        first = audio.first_voiced_sample(r.encoded(pcm), pcm)
        assert abs(first * 1000 / 24000 - r.leading_silence_ms) <= 5
    ulaw = audio.output_format("g711_ulaw")
    data = replies[0].encoded(ulaw)
    assert replies[0].encoded(ulaw) is data and abs(len(data) - replies[0].duration_ms * 8) <= 8
    assert load_replies()[0] is replies[0]  # shared across sessions


def test_fixture_module_caches_are_process_wide() -> None:
    assert fixtures.get_fixture("cs_order_status") is fixtures.get_fixture("cs_order_status")
