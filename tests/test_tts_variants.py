"""Caller variants: the matrix expands as written, each session is one caller, and the report shows
WER and completeness per caller variant."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from harness.records import TurnRecord
from harness.report.html import write_all
from harness.scenario import ScenarioError, parse_scenario
from harness.tts.prepare import fixture_for, lines_of, prepare_speech, variant_for


def scenario(doc: dict, tmp_path):
    return parse_scenario(doc, str(tmp_path / "s.yaml"))


def test_matrix_expands_every_combination_with_readable_labels(tmp_path):
    sc = scenario({"conversation": [{"say": "Hello there."}],
                   "variants": {"voice": ["espeak:en-us", "espeak:en-gb"], "rate": [0.85, 1.2],
                                "noise": ["none", "car", "babble"], "snr_db": 5, "channel": "g711",
                                "drop_rate": 0.02}}, tmp_path)
    assert len(sc.variants) == 12 and [v.index for v in sc.variants] == list(range(12))
    assert [v.id for v in sc.variants][:2] == ["v0", "v1"]
    labels = [v.label for v in sc.variants]
    assert len(set(labels)) == 12
    assert labels[0] == "voice=espeak:en-us rate=0.85 noise=none" and labels[1] == "voice=espeak:en-us rate=0.85 noise=car@5dB"
    v = sc.variants[8]
    assert v.fields() == {"voice": "espeak:en-gb", "rate": 0.85, "noise": "babble", "snr_db": 5.0, "channel": "g711",
                          "gain_db": 0.0, "drop_rate": 0.02}
    # sessions take callers round-robin
    assert [variant_for(sc, seed).index for seed in range(14)] == [*range(12), 0, 1]


def test_list_form_dedupes_and_names(tmp_path):
    sc = scenario({"conversation": [{"fixture": "cs_order_status"}],
                   "variants": [{"id": "clean"}, {"id": "phone", "channel": "g711", "gain_db": -12},
                                {"id": "same-as-clean", "noise": "none", "snr_db": 3}]}, tmp_path)
    assert [v.id for v in sc.variants] == ["clean", "phone"]
    assert [v.label for v in sc.variants] == ["channel=wideband gain=+0dB", "channel=g711 gain=-12dB"]
    rows = lines_of(sc)
    assert rows[0][0] is None  # the clean caller plays the recorded fixture unchanged
    assert rows[0][1].source.id == "cs_order_status" and rows[0][1].caller.channel == "g711"


@pytest.mark.parametrize("variants, expected", [
    ({"noise": ["rain"]}, "variants.noise: "),
    ({"rate": [0.1]}, "variants.rate: "),
    ({"colour": ["red"]}, "variants.colour: unknown"),
    ({"rate": [0.9, 1.0, 1.1, 1.2], "noise": ["none", "car", "babble", "pink"], "snr_db": [0, 5, 10, 15, 20],
      "channel": ["wideband", "g711"], "gain_db": [0, -10]}, "at most 256"),
    ([{"voice": "nope:x"}], "variants[0].voice: unknown speech engine 'nope'"),
    ("loud", "variants: expected a mapping of lists"),
])
def test_bad_variants_name_the_field(tmp_path, variants, expected):
    with pytest.raises(ScenarioError) as err:
        scenario({"conversation": [{"say": "Hi."}], "variants": variants}, tmp_path)
    assert expected in str(err.value) and str(tmp_path / "s.yaml") in str(err.value)


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")
def test_prepare_renders_each_line_for_each_caller(tmp_path):
    sc = scenario({"speech": {"engine": "espeak"},
                   "conversation": [{"say": "My card was declined.", "rate": 1.1}, {"fixture": "cs_double_charge"}],
                   "variants": {"rate": [0.9, 1.0], "noise": ["none", "car"]}}, tmp_path)
    done = prepare_speech(sc)
    assert done.synthesised == 2 and done.made == 5 and done.hits == 1 and done.cache_dir == str(tmp_path / ".voiceload-cache" / "tts")
    say, recorded = sc.conversation
    assert len(say.variant_fixtures) == 4 and len({f for f, _ in say.variant_fixtures}) == 4
    assert say.fixture == say.variant_fixtures[0][0]
    fx = [fixture_for(sc, say, v) for v in sc.variants]
    assert [f.synth for f in fx] == ["espeak:en-us rate=0.99", "espeak:en-us rate=0.99 noise=car@10dB",
                                     "espeak:en-us rate=1.1", "espeak:en-us rate=1.1 noise=car@10dB"]
    rec = [fixture_for(sc, recorded, v) for v in sc.variants]
    assert rec[0].id == rec[2].id == "cs_double_charge" and rec[1].id == rec[3].id != "cs_double_charge"
    assert rec[1].text == rec[0].text and rec[1].snr_db == 10.0


def test_summary_and_report_per_variant(tmp_path):
    def rec(variant: str, complete: bool, wer: float) -> dict:
        return TurnRecord(run_id="r", scenario="s", target="embedded", session_id=variant, variant=variant,
                          variant_fields={"noise": "car" if "car" in variant else "none"}, complete=complete,
                          reason="complete" if complete else "no_response", wer=wer, first_audio_ms=800.0,
                          t_speech_end=1.7e9).to_dict()

    rows = [rec("noise=none", True, 0.0), rec("noise=none", True, 0.0),
            rec("noise=car@5dB", True, 0.5), rec("noise=car@5dB", False, 1.0)]
    (tmp_path / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r", "scenario": "s", "targets": [{"name": "embedded"}]}))
    paths = write_all(tmp_path)
    summary = pd.read_csv(paths["summary.csv"]).set_index("variant")
    assert summary.loc["noise=none", "completeness"] == 1.0 and summary.loc["noise=none", "wer_mean"] == 0.0
    assert summary.loc["noise=car@5dB", "completeness"] == 0.5 and summary.loc["noise=car@5dB", "wer_mean"] == 0.75
    html = paths["report.html"].read_text()
    section = html[html.index("By caller variant"):]
    assert section.index("noise=car@5dB") < section.index("noise=none")  # the failing caller first
    turns_csv = pd.read_csv(paths["turns.csv"])
    assert set(turns_csv["variant"]) == {"noise=none", "noise=car@5dB"}
    assert json.loads(turns_csv["variant_fields"][2]) == {"noise": "car"}


def test_runs_without_variants_keep_their_summary_shape(tmp_path):
    row = TurnRecord(run_id="r", scenario="s", target="embedded", complete=True, reason="complete").to_dict()
    (tmp_path / "turns.jsonl").write_text(json.dumps(row) + "\n")
    paths = write_all(tmp_path)
    assert "variant" not in pd.read_csv(paths["summary.csv"]).columns
    assert "By caller variant" not in paths["report.html"].read_text()


def test_each_session_streams_as_its_caller(tmp_path):
    """Two sessions, two callers: the second loses chunks in transit, the first none; records say which."""
    from harness.client.endpoints import embedded_endpoint
    from harness.client.session import CallerSession, SessionOptions
    from harness.simulator import SimulatorProcess

    sc = scenario({"session": {"input_audio_transcription": {"model": "azure-speech"}},
                   "conversation": [{"fixture": "car_call_mom", "pause_ms": 100}],
                   "audio": {"trailing_silence_ms": 300},
                   "load": {"max_pacing_lag_ms": 1000},
                   "variants": [{"id": "clean", "drop_rate": 0}, {"id": "lossy", "drop_rate": 0.3}]}, tmp_path)
    prepare_speech(sc)
    out = {}
    with SimulatorProcess(profile="ideal") as sim:
        for seed in (0, 1):
            s = CallerSession(sc, embedded_endpoint("embedded", sim.url), SessionOptions(seed=seed))
            s.run()
            out[s.variant.id] = (s.timeline.turns[0].utterance.dropped, s.records[0])
    assert out["clean"][0] == 0 and out["lossy"][0] >= 10  # ~64 chunks of 20 ms, 30 % lost
    assert out["clean"][1].variant == "drop=0%" and out["lossy"][1].variant == "drop=30%"
    assert out["lossy"][1].variant_fields["drop_rate"] == 0.3


@pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")
def test_say_lines_inside_branches_are_prepared_too(tmp_path):
    sc = scenario({"speech": {"voice": "espeak:en-us"},
                   "conversation": [{"id": "ask", "say": "Where is my parcel?",
                                     "branches": [{"when": {"response_matches": "order number"},
                                                   "turns": [{"say": "It is four four one seven."}]},
                                                  {"turns": [{"say": "Thank you, goodbye."}]}]}],
                   "variants": {"channel": ["wideband", "g711"]}}, tmp_path)
    done = prepare_speech(sc)
    assert len(sc.conversation) == 3 and done.synthesised == 3 and done.made == 6
    assert all(len(t.variant_fixtures) == 2 and t.fixture.startswith("say_") for t in sc.conversation)
    assert {fixture_for(sc, t, sc.variants[1]).text for t in sc.conversation} == {
        "Where is my parcel?", "It is four four one seven.", "Thank you, goodbye."}
