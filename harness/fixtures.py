"""The fixture set as the engine sees it: validated manifest, lazily loaded audio, shared frames.

Fixtures are 24 kHz mono PCM16 WAVs listed in ``audio_fixtures/manifest.yaml`` with the speech
bounds and fingerprint computed by the same VAD and fingerprint code the simulator runs. Encoded
frames are cached process-wide so hundreds of sessions sending the same utterance share one copy.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import soundfile as sf
import soxr
import yaml

from harness import audio, paths, vad

ROOT = paths.REPO
DEFAULT_DIR = "audio_fixtures"
MANIFEST = "manifest.yaml"
MAX_SECONDS = 60.0
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class FixtureError(ValueError):
    """A malformed manifest or unusable audio file; ``str()`` names the file and the field."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file, self.field, self.message = str(file), field, message
        super().__init__(f"{self.file}: {field}: {message}" if field else f"{self.file}: {message}")


@dataclass
class Fixture:
    """One utterance. Times are ms from the start of the WAV; bounds are where the VAD hears speech."""

    id: str
    file: str  # relative to the manifest's directory
    text: str
    language: str
    use_case: str
    speech_start_ms: int
    speech_end_ms: int
    duration_ms: int
    fingerprint: str
    variant_of: str | None = None  # the clean fixture this is a noisy copy of
    snr_db: float | None = None
    synth: str | None = None  # how a synthesised line was made (engine:voice, rate, noise...); None = recorded
    directory: Path | None = field(default=None, repr=False, compare=False)
    _samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return (self.directory or _resolve("audio_fixtures")) / self.file

    def samples(self) -> np.ndarray:
        """int16 samples at 24 kHz mono (read once, then shared)."""
        if self._samples is None:
            x, _ = sf.read(self.path, dtype="int16")
            x.setflags(write=False)
            self._samples = x
        return self._samples

    def to_dict(self) -> dict[str, Any]:
        keys = ("id", "file", "text", "language", "use_case", "speech_start_ms", "speech_end_ms",
                "duration_ms", "fingerprint", "variant_of", "snr_db")
        out = {k: getattr(self, k) for k in keys}
        if self.synth is not None:
            out["synth"] = self.synth
        return out

    @property
    def kind(self) -> str:
        return "recorded" if self.synth is None else "synthesised"


# --- manifest ------------------------------------------------------------------------------------

_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "file": (str,), "text": (str,), "language": (str,), "use_case": (str,),
    "speech_start_ms": (int,), "speech_end_ms": (int,), "duration_ms": (int,), "fingerprint": (str,),
}
_OPTIONAL: dict[str, tuple[type, ...]] = {"variant_of": (str,), "snr_db": (int, float), "synth": (str,)}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number"}


def _resolve(directory: str | Path) -> Path:
    """Relative directories are taken from the working directory, else from the repo root; the default
    name falls back to the library shipped with the package (an installed wheel run from anywhere)."""
    d = Path(directory)
    if d.is_absolute() or d.exists() or (ROOT / d).exists():
        return d if d.is_absolute() or d.exists() else ROOT / d
    return paths.builtin_fixtures() if d == Path(DEFAULT_DIR) else ROOT / d


def _display(directory: str | Path) -> str:
    return f"{Path(directory).as_posix()}/{MANIFEST}"


def _check_type(where: str, name: str, value: Any, types: tuple[type, ...], file: str) -> None:
    ok = isinstance(value, types) and not isinstance(value, bool)
    if not ok:
        raise FixtureError(file, f"{where}.{name}", f"expected {_TYPE_NAMES[types[-1] if float in types else types[0]]}, got {value!r}")


def load_manifest(directory: str | Path = "audio_fixtures") -> dict[str, Fixture]:
    """Parse and validate ``manifest.yaml`` and check every WAV's format; ids map to fixtures."""
    shown, base = _display(directory), _resolve(directory)
    try:
        doc = yaml.safe_load((base / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FixtureError(shown, "", "no such file") from None
    except yaml.YAMLError as exc:
        raise FixtureError(shown, "", f"invalid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fixtures"), list):
        raise FixtureError(shown, "fixtures", "expected a top-level 'fixtures:' list")
    out: dict[str, Fixture] = {}
    for i, entry in enumerate(doc["fixtures"]):
        where = f"fixtures[{i}]"
        if not isinstance(entry, dict):
            raise FixtureError(shown, where, f"expected a mapping, got {entry!r}")
        for name in entry:
            if name not in _FIELDS and name not in _OPTIONAL:
                raise FixtureError(shown, f"{where}.{name}", "unknown field")
        for name, types in _FIELDS.items():
            if name not in entry:
                raise FixtureError(shown, f"{where}.{name}", "missing")
            _check_type(where, name, entry[name], types, shown)
        for name, types in _OPTIONAL.items():
            if entry.get(name) is not None:
                _check_type(where, name, entry[name], types, shown)
        fx = Fixture(**{k: entry.get(k) for k in (*_FIELDS, *_OPTIONAL)}, directory=base)
        if not ID_RE.match(fx.id):
            raise FixtureError(shown, f"{where}.id", f"invalid id {fx.id!r} (use a-z, 0-9, '_' and '-')")
        if fx.id in out:
            raise FixtureError(shown, f"{where}.id", f"duplicate id {fx.id!r}")
        if not 0 <= fx.speech_start_ms < fx.speech_end_ms <= fx.duration_ms:
            raise FixtureError(shown, f"{where}.speech_end_ms", "expected 0 <= speech_start_ms < speech_end_ms <= duration_ms")
        _check_wav(fx, shown, where)
        out[fx.id] = fx
    for i, fx in enumerate(out.values()):
        if fx.variant_of is not None and fx.variant_of not in out:
            raise FixtureError(shown, f"fixtures[{i}].variant_of", f"unknown fixture {fx.variant_of!r}")
    return out


def _check_wav(fx: Fixture, shown: str, where: str) -> None:
    try:
        info = sf.info(fx.path)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        reason = "no such file" if not fx.path.exists() else f"unreadable ({exc})"
        raise FixtureError(shown, f"{where}.file", f"{fx.file}: {reason}") from None
    if info.samplerate != audio.BASE_RATE or info.channels != 1 or info.subtype != "PCM_16":
        got = f"{info.samplerate} Hz, {info.channels} channel(s), {info.subtype}"
        raise FixtureError(shown, f"{where}.file", f"{fx.file}: expected 24000 Hz mono PCM_16, got {got}")
    ms = info.frames * 1000 // info.samplerate
    if ms > MAX_SECONDS * 1000:
        raise FixtureError(shown, f"{where}.duration_ms", f"too long: {fx.file} is {ms / 1000:.1f} s > "
                                                          f"{MAX_SECONDS:.0f} s (one utterance per fixture)")
    if abs(ms - fx.duration_ms) > 1:
        raise FixtureError(shown, f"{where}.duration_ms", f"{fx.duration_ms} does not match {fx.file} ({ms} ms)")


def save_manifest(directory: str | Path, fixtures: Iterable[Fixture]) -> None:
    """Write the manifest sorted by id, atomically (temp file + rename)."""
    base = _resolve(directory)
    rows = [f.to_dict() for f in sorted(fixtures, key=lambda f: f.id)]
    text = "# Audio fixtures: 24 kHz mono PCM16. Bounds and fingerprints come from harness.vad /\n"
    text += "# harness.audio (see README.md); regenerate with generate.py or harness.fixtures.add_fixture.\n"
    text += yaml.safe_dump({"fixtures": rows}, sort_keys=False, allow_unicode=True, width=100000)
    _atomic_write(base / MANIFEST, text.encode("utf-8"))
    _manifest.cache_clear()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_fixture(
    src_path: str | Path,
    text: str,
    fixture_id: str | None = None,
    directory: str | Path = "audio_fixtures",
    language: str = "en-US",
    use_case: str = "custom",
    *,
    synth: str | None = None,
    snr_db: float | None = None,
) -> Fixture:
    """Convert any WAV/FLAC/OGG to a fixture (24 kHz mono PCM16), measure it and add it to the manifest.

    ``synth``/``snr_db`` describe a synthesised line (``voiceload fixtures say``, harness/tts)."""
    src = Path(src_path)
    fid = fixture_id if fixture_id is not None else re.sub(r"[^a-z0-9_-]+", "_", src.stem.lower()).strip("_-")
    if not ID_RE.match(fid):
        raise FixtureError(str(src), "id", f"invalid id {fid!r} (use a-z, 0-9, '_' and '-', at most 64)")
    try:
        info = sf.info(src)
        if info.frames > MAX_SECONDS * info.samplerate:
            raise FixtureError(str(src), "", f"too long: {info.frames / info.samplerate:.1f} s > {MAX_SECONDS:.0f} s")
        x, rate = sf.read(src, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise FixtureError(str(src), "", f"cannot read audio ({exc})") from None
    if x.shape[0] == 0:
        raise FixtureError(str(src), "", "empty: no samples")
    mono = x.mean(axis=1)
    if rate != audio.BASE_RATE:
        mono = soxr.resample(mono, rate, audio.BASE_RATE, quality="HQ")
    pcm = audio.to_int16(mono * 32768.0)
    bounds = vad.speech_bounds(pcm, audio.BASE_RATE)
    if bounds is None:
        raise FixtureError(str(src), "", "no speech found (silent or only noise)")
    base = _resolve(directory)
    if paths.SHIPPED_DIR in base.resolve().parents:  # an installed package's library is read-only: write here
        base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    existing = load_manifest(base) if (base / MANIFEST).exists() else {}
    if fid in existing or (base / f"{fid}.wav").exists():
        raise FixtureError(_display(directory), "id", f"duplicate id {fid!r}")
    fx = Fixture(
        id=fid, file=f"{fid}.wav", text=text, language=language, use_case=use_case,
        speech_start_ms=bounds[0], speech_end_ms=bounds[1], duration_ms=len(pcm) * 1000 // audio.BASE_RATE,
        fingerprint=audio.fingerprint(pcm, audio.BASE_RATE), directory=base, synth=synth, snr_db=snr_db,
    )
    wav = base / fx.file
    fd, tmp = tempfile.mkstemp(dir=base, prefix=f".{fid}.", suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, pcm, audio.BASE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, wav)
        save_manifest(base, [*existing.values(), fx])
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        wav.unlink(missing_ok=True)
        raise
    return fx


# --- shared pre-encoded frames -------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSet:
    """A fixture cut into base64 chunks of one wire format; shared by every session that sends it."""

    frames: tuple[str, ...]
    chunk_ms: int
    speech_start_ms: int
    speech_end_ms: int
    duration_ms: int


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _manifest(directory: Path) -> dict[str, Fixture]:
    return load_manifest(directory)


def get_fixture(fixture_id: str, directory: str | Path = "audio_fixtures") -> Fixture:
    """A fixture from the (cached) manifest, else from the shipped library; KeyError names the known ids."""
    base = _resolve(directory).resolve()
    table = _manifest(base)
    if fixture_id not in table:
        table = {**_shipped(base), **table}
    if fixture_id not in table:
        raise KeyError(f"unknown fixture {fixture_id!r}; known: {', '.join(sorted(table))}")
    return table[fixture_id]


def library(directory: str | Path = "audio_fixtures") -> dict[str, Fixture]:
    """The ids a scenario can name: the shipped library overlaid by ``directory``'s manifest (its ids win).

    So a user's fixtures beside their scenarios need not copy the built-in ones. The user's manifest is
    read afresh and its problems raise FixtureError as in load_manifest.
    """
    base = _resolve(directory).resolve()
    return {**_shipped(base), **load_manifest(base)}


def _shipped(base: Path) -> dict[str, Fixture]:
    builtin = paths.builtin_fixtures().resolve()
    return _manifest(builtin) if builtin != base and (builtin / MANIFEST).is_file() else {}


def pink_noise(n: int, seed: int = 0) -> np.ndarray:
    """Unit-RMS pink-ish noise (1/f above 50 Hz), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(max(n, 2)))
    spec /= np.sqrt(np.maximum(np.fft.rfftfreq(max(n, 2), 1.0 / audio.BASE_RATE), 50.0))
    y = np.fft.irfft(spec, max(n, 2))[:n]
    return y / max(float(np.sqrt(np.mean(y**2))), 1e-12)


def _chunks(data: bytes, fmt: audio.AudioFormat, chunk_ms: int) -> tuple[str, ...]:
    size = fmt.bytes_for_ms(chunk_ms)
    if size <= 0:
        raise ValueError(f"chunk_ms={chunk_ms} is less than one sample of {fmt.name}")
    if len(data) % size:
        data += audio.silence_byte(fmt) * (size - len(data) % size)
    return tuple(base64.b64encode(data[i : i + size]).decode("ascii") for i in range(0, len(data), size))


def frames(
    fixture_id: str,
    fmt: audio.AudioFormat,
    chunk_ms: int = 20,
    *,
    gain_db: float = 0.0,
    snr_db: float | None = None,
    seed: int = 0,
    directory: str | Path = "audio_fixtures",
) -> FrameSet:
    """The fixture in ``fmt`` as base64 chunks (last one padded with silence), cached per argument set.

    ``snr_db`` adds pink-ish noise relative to the RMS of the speech region; ``gain_db`` scales after
    that, clipping at full scale.
    """
    with _LOCK:
        return _frames(fixture_id, fmt, int(chunk_ms), float(gain_db), snr_db, int(seed), _resolve(directory).resolve())


@functools.lru_cache(maxsize=1024)
def _frames(fixture_id, fmt, chunk_ms, gain_db, snr_db, seed, directory) -> FrameSet:
    fx = get_fixture(fixture_id, directory)
    x = fx.samples().astype(np.float64)
    if snr_db is not None:
        k = audio.BASE_RATE // 1000
        speech = x[fx.speech_start_ms * k : fx.speech_end_ms * k]
        rms = float(np.sqrt(np.mean(speech**2))) if speech.size else 0.0
        x = x + pink_noise(len(x), seed) * rms * 10 ** (-float(snr_db) / 20)
    if gain_db:
        x = x * 10 ** (gain_db / 20)
    data = audio.encode(audio.to_int16(x), fmt)
    return FrameSet(_chunks(data, fmt, chunk_ms), chunk_ms, fx.speech_start_ms, fx.speech_end_ms, fx.duration_ms)


def silence_frames(
    fmt: audio.AudioFormat, chunk_ms: int = 20, level_dbfs: float | None = None, seed: int = 0, count: int = 50
) -> tuple[str, ...]:
    """``count`` chunks of room tone: digital silence (None) or pink-ish noise at ``level_dbfs`` RMS."""
    with _LOCK:
        return _silence(fmt, int(chunk_ms), level_dbfs, int(seed), int(count))


@functools.lru_cache(maxsize=256)
def _silence(fmt, chunk_ms, level_dbfs, seed, count) -> tuple[str, ...]:
    n = audio.BASE_RATE * chunk_ms * count // 1000
    if level_dbfs is None:
        one = _chunks(audio.encode(np.zeros(audio.BASE_RATE * chunk_ms // 1000, np.int16), fmt), fmt, chunk_ms)[0]
        return (one,) * count
    x = pink_noise(n, seed) * 32768.0 * 10 ** (level_dbfs / 20)
    return _chunks(audio.encode(audio.to_int16(x), fmt), fmt, chunk_ms)[:count]
