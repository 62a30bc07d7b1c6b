"""``voiceload fixtures say`` / ``fixtures list`` and the speech step of ``voiceload run``.

Argument definitions only at import time (the CLI builds its parser before gevent patches anything);
numpy, engines and the cache load inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..exitcodes import EXIT_OK, EXIT_USAGE

DEFAULT_DIR = "audio_fixtures"


def add_commands(fsub: Any) -> None:
    """Register ``fixtures say`` on the ``fixtures`` sub-parser set."""
    from .render import CHANNELS, NOISES

    fs = fsub.add_parser("say", help="synthesise a line (Piper, espeak-ng or Azure) into a fixture and its manifest "
                                     "entry")
    fs.add_argument("text", help="what the caller says")
    fs.add_argument("--voice", help="engine:voice, e.g. piper:en_US-joe-medium (default), espeak:de, "
                                    "azure:en-US-AvaMultilingualNeural")
    fs.add_argument("--rate", type=float, default=1.0, help="speaking rate (0.5-2.0; 0.9 is 10%% slower)")
    fs.add_argument("--noise", choices=NOISES, default="none", help="background noise")
    fs.add_argument("--snr", type=float, default=None, help="speech-to-noise ratio in dB (default 10 with --noise)")
    fs.add_argument("--channel", choices=CHANNELS, default="wideband", help="g711: through a mu-law phone line")
    fs.add_argument("--gain", type=float, default=0.0, help="gain in dB")
    fs.add_argument("--id", dest="fixture_id", help="fixture id (default: from the text)")
    fs.add_argument("--use-case", default="custom")
    fs.add_argument("--dir", default=DEFAULT_DIR, help="fixture directory (default audio_fixtures)")
    fs.set_defaults(func=cmd_say)


def add_list_options(fl: Any) -> None:
    fl.add_argument("--cache", action="append", default=[], metavar="DIR",
                    help="also list a speech cache (default: .voiceload-cache/tts here and under scenarios/)")


def prepare_for_run(scenario: Any, quiet: bool = False) -> int | None:
    """Synthesise the scenario's say: lines before load starts; an exit code on failure, else None."""
    from ..redaction import redact
    from .prepare import SpeechError, prepare_speech

    try:
        prepare_speech(scenario, progress=sys.stderr)  # one line even with --quiet: synthesis takes time
    except SpeechError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    return None


def cmd_say(args: argparse.Namespace) -> int:
    import re

    from .. import fixtures
    from ..redaction import redact
    from .cache import CACHE_SUBDIR, Line, SpeechCache
    from .engines import MAX_RATE, MIN_RATE, EngineError, default_engine, parse_voice
    from .render import Caller

    if not MIN_RATE <= args.rate <= MAX_RATE:
        print(f"error: --rate: must be between {MIN_RATE} and {MAX_RATE}, got {args.rate}", file=sys.stderr)
        return EXIT_USAGE
    if args.snr is not None and args.noise == "none":
        print("error: --snr needs --noise (car, babble, pink or white)", file=sys.stderr)
        return EXIT_USAGE
    engine, note = default_engine()
    try:
        voice = parse_voice(args.voice, engine)
    except ValueError as exc:
        print(f"error: --voice: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.voice is None or ":" not in args.voice:
        print(f"voiceload: speech: {note}", file=sys.stderr)
    fid = args.fixture_id or re.sub(r"[^a-z0-9]+", "_", args.text.lower()).strip("_")[:48] or "say"
    if not fixtures.ID_RE.match(fid):
        print(f"error: --id: invalid id {fid!r} (use a-z, 0-9, '_' and '-', at most 64)", file=sys.stderr)
        return EXIT_USAGE
    line = Line(text=args.text, voice=voice, rate=args.rate,
                caller=Caller(noise=args.noise, snr_db=args.snr, channel=args.channel, gain_db=args.gain))
    cache = SpeechCache(Path(args.dir) / CACHE_SUBDIR)  # re-running the same line reuses its synthesis
    try:
        cache.engines.get(voice.engine).check(voice.name)
        made = cache.get(line, use_case=args.use_case)
        fx = fixtures.add_fixture(made.path, args.text, fixture_id=fid, directory=args.dir, language=made.language,
                                  use_case=args.use_case, synth=made.synth, snr_db=made.snr_db)
    except (EngineError, fixtures.FixtureError, OSError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    how = "from the cache" if cache.stats.synthesised == 0 else (
        f"synthesised {cache.stats.speech_s:.1f} s of speech in {cache.stats.wall_s:.2f} s")
    print(f"added {fid}: {fx.file} ({fx.synth}) speech {fx.speech_start_ms}–{fx.speech_end_ms} ms of "
          f"{fx.duration_ms} ms, {how}")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """Recorded and synthesised fixtures of the fixture directory, then every speech cache found."""
    from .. import fixtures
    from .cache import CACHE_SUBDIR

    try:
        table = fixtures.library(args.dir)  # the user's fixtures and the shipped library
    except fixtures.FixtureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for fx in table.values():
        print(f"{fx.id:32} {fx.kind:11} {fx.language:6} {fx.duration_ms:6d} ms  {fx.text}"
              + (f"  [{fx.synth}]" if fx.synth else ""))
    caches = [Path(c) for c in getattr(args, "cache", [])] or [
        p for p in (Path(CACHE_SUBDIR), Path("scenarios") / CACHE_SUBDIR) if (p / fixtures.MANIFEST).exists()]
    for c in caches:
        try:
            cached = fixtures.load_manifest(c)
        except fixtures.FixtureError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"# speech cache {c}: {len(cached)} line(s)")
        for fx in cached.values():
            print(f"{fx.id:32} {'cached':11} {fx.language:6} {fx.duration_ms:6d} ms  {fx.text}  [{fx.synth}]")
    return EXIT_OK
