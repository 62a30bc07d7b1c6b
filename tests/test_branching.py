"""Branching conversations: a turn chooses the caller's next line from the agent's response transcript.

Parsing and validation in-process; the run end to end twice: through `voiceload run` against two
embedded simulators whose profiles answer differently (one always asks for the order number, one
always promises a refund), and against an independent loopback server (tests/faultserver.py) that
says exactly the transcript the test chooses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gevent
import pytest

import faultserver as fs
from harness.branching import next_turn
from harness.client.session import Endpoint, SessionOptions, run_session
from harness.protocol import events as ev
from harness.scenario import ScenarioError, load_scenario
from harness.simulator.profiles import ProfileError
from harness.simulator.server import Simulator

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """\
max_turns: 4
session:
  input_audio_transcription: {model: azure-speech}
  turn_detection: {type: server_vad, silence_duration_ms: 300}
conversation:
  - id: ask
    fixture: car_call_mom
    pause_ms: 200
    branches:
      - when: {response_matches: "order +number"}
        goto: give_number
      - turns: [{id: complain, fixture: car_call_mom, pause_ms: 200}]
  - id: done
    fixture: car_call_mom
    pause_ms: 200
    goto: ask
  - id: give_number
    fixture: car_eta
    pause_ms: 200
audio: {trailing_silence_ms: 300}
load: {users: 2, spawn_rate: 10, duration: 3s, stop_timeout: 20s, turn_timeout: 10s, max_pacing_lag_ms: 1000}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    return str(info.value).replace(f"{path}: ", "FILE: ")


def test_the_script_becomes_one_flat_list_of_turns_with_successors_and_branch_targets(tmp_path):
    sc = load_scenario(write(tmp_path, SCRIPT))
    ids = [t.id for t in sc.conversation]
    assert ids == ["ask", "done", "give_number", "complain"]  # inline turns after the written ones
    ask, done, give, complain = sc.conversation
    assert [b.target for b in ask.branches] == [2, 3] and ask.next == 1
    assert complain.next == 1  # after the inline turns: on to the turn after `ask`
    assert done.next == 0 and give.next is None and sc.max_turns == 4
    assert next_turn(ask, "Could you read me your ORDER  NUMBER?") == 2
    assert next_turn(ask, "I've opened a refund for you.") == 3
    # without branches a script is spoken as written, turn ids default to positions
    plain = load_scenario(write(tmp_path, "conversation: [car_call_mom, car_eta]\n", "p.yaml"))
    assert [(t.id, t.next) for t in plain.conversation] == [("0", 1), ("1", None)] and plain.max_turns is None


BAD = [
    ("unknown goto", SCRIPT.replace("goto: give_number", "goto: give_numbr"),
     "FILE: conversation[0].branches[0].goto: unknown turn id 'give_numbr'"),
    ("unknown turn goto", SCRIPT.replace("goto: ask", "goto: nowhere"), "FILE: conversation[1].goto: unknown turn id 'nowhere'"),
    ("loop without max_turns", SCRIPT.replace("max_turns: 4\n", ""),
     "FILE: max_turns: the conversation can loop (ask → complain → done → ask); set max_turns"),
    ("bad regex", SCRIPT.replace('"order +number"', '"order (number"'),
     "FILE: conversation[0].branches[0].when.response_matches: invalid regular expression"),
    ("both goto and turns", SCRIPT.replace("goto: give_number", "goto: give_number\n        turns: [car_eta]"),
     "FILE: conversation[0].branches[0]: give either goto (a turn id or end) or turns"),
    ("otherwise first", SCRIPT.replace("      - when: {response_matches: \"order +number\"}\n        goto: give_number\n", "")
     .replace("      - turns: [{id: complain, fixture: car_call_mom, pause_ms: 200}]\n",
              "      - turns: [{id: complain, fixture: car_call_mom, pause_ms: 200}]\n      - when: {response_matches: x}\n"
              "        goto: end\n"), "FILE: conversation[0].branches[0]: an otherwise branch (no when) must be the last"),
    ("duplicate id", SCRIPT.replace("id: done", "id: ask"), "FILE: conversation[1].id: duplicate turn id 'ask'"),
    ("reserved id", SCRIPT.replace("id: done", "id: end"), "FILE: conversation[1].id: 'end' is reserved"),
    ("inline fixture unknown", SCRIPT.replace("{id: complain, fixture: car_call_mom", "{id: complain, fixture: nope"),
     "FILE: conversation[0].branches[1].turns[0].fixture: unknown fixture 'nope'"),
    ("when without a test", SCRIPT.replace('when: {response_matches: "order +number"}', "when: {}"),
     "FILE: conversation[0].branches[0].when: needs response_matches"),
    ("max_turns zero", SCRIPT.replace("max_turns: 4", "max_turns: 0"), "FILE: max_turns: must be ≥ 1"),
    ("barge-in after a choice", SCRIPT.replace("  - id: give_number\n    fixture: car_eta\n",
                                               "  - id: give_number\n    fixture: car_eta\n    barge_in_after_ms: 300\n"),
     "FILE: conversation[2].barge_in_after_ms: follows the branching turn 'ask', which waits for the whole response"),
]


@pytest.mark.parametrize("label,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_branches_are_refused_naming_file_and_field(tmp_path, label, text, expected):
    assert expected in error_of(tmp_path, text)


def test_a_profile_answers_from_a_chosen_part_of_the_reply_bank(tmp_path):
    sim = Simulator("ideal", overrides={"replies": ["cs_refund"]})
    assert [r.id for r in sim.bank.replies] == ["cs_refund"]
    with pytest.raises(ProfileError, match="replies: unknown reply id.*cs_nope.*known: cs_order_number"):
        Simulator("ideal", overrides={"replies": ["cs_nope"]})


def test_both_branches_taken_end_to_end_against_simulators_that_answer_differently(tmp_path):
    profiles = {}
    for reply in ("cs_order_number", "cs_refund"):
        profiles[reply] = write(tmp_path, f"replies: [{reply}]\nfirst_audio_delay_ms: {{dist: fixed, value: 150}}\n"
                                          "audio_pace: {dist: fixed, value: 4.0}\ntranscription: {word_error_rate: 0}\n",
                                f"{reply}.yaml")
    targets = (f"targets:\n  - {{embedded: true, name: asks, profile: {profiles['cs_order_number']}}}\n"
               f"  - {{embedded: true, name: refunds, profile: {profiles['cs_refund']}}}\n")
    sc = write(tmp_path, targets + SCRIPT)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sc), "--sessions-per-user", "1",
                          "--out", str(out), "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    sessions = {s["target"]: s for s in map(json.loads, (out / "sessions.jsonl").read_text().splitlines())}
    assert sessions["asks"]["path"] == ["ask", "give_number"]
    # the other branch: inline turn, back to the script, loop bounded by max_turns
    assert sessions["refunds"]["path"] == ["ask", "complain", "done", "ask"]
    turns = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    by_target = {t: sorted((r["turn_index"], r["turn_id"], r["fixture"]) for r in turns if r["target"] == t)
                 for t in ("asks", "refunds")}
    assert by_target["asks"] == [(0, "ask", "car_call_mom"), (1, "give_number", "car_eta")]
    assert [tid for _, tid, _ in by_target["refunds"]] == ["ask", "complain", "done", "ask"]
    assert all(r["complete"] for r in turns)
    assert "order number" in next(r["response_transcript"] for r in turns if r["target"] == "asks").lower()


PUSH_TO_TALK = """\
max_turns: 4
session: {turn_detection: null}
conversation:
  - id: ask
    fixture: car_call_mom
    manual_commit: true
    pause_ms: 100
    branches:
      - when: {response_matches: "order +number"}
        goto: give_number
      - turns: [{id: complain, fixture: car_call_mom, manual_commit: true, pause_ms: 100}]
  - {id: done, fixture: car_call_mom, manual_commit: true, pause_ms: 100, goto: ask}
  - {id: give_number, fixture: car_call_mom, manual_commit: true, pause_ms: 100}
audio: {trailing_silence_ms: 0}
load: {turn_timeout: 5s}
"""


def _answers(first: str):
    """An independent Voice Live stand-in: each committed utterance gets one response with this transcript
    (push-to-talk, so the caller's response.create says where its utterance ended)."""

    def script(c: fs.Conn) -> None:
        c.open_session()
        asked = 0
        for n, text in enumerate([first, "Thank you, goodbye.", "Anything else?", "Bye."]):
            for _ in range(500):  # at most 10 s for the caller's next response.create
                creates = sum(1 for e in c.received if e.get("type") == ev.RESPONSE_CREATE)
                if creates > asked:
                    break
                gevent.sleep(0.02)
            else:
                return
            asked += 1
            rid, item = f"resp_{n}", f"item_u{n}"
            c.send(ev.server_event(ev.COMMITTED, item_id=item))
            c.send(ev.server_event(ev.RESPONSE_CREATED, response=ev.response_object(rid)))
            c.send(ev.server_event(ev.AUDIO_TRANSCRIPT_DELTA, response_id=rid, item_id=f"out_{rid}", output_index=0,
                                   content_index=0, delta=text))
            c.response_done(rid)

    return script


@pytest.mark.parametrize("said,path", [("May I have your order number?", ["ask", "give_number"]),
                                       ("I can refund that.", ["ask", "complain", "done", "ask"])])
def test_the_branch_follows_the_transcript_of_an_independent_server(tmp_path, said, path):
    sc = load_scenario(write(tmp_path, PUSH_TO_TALK))
    with fs.ScriptServer(_answers(said)) as srv:
        ep = Endpoint(name="standin", url=lambda: srv.url, headers=dict, display=srv.url, open_timeout_s=5.0)
        g = gevent.spawn(run_session, sc, ep, SessionOptions())
        g.join(timeout=60)
        assert not srv.errors, srv.errors
    assert g.successful(), g.exception
    assert [r.turn_id for r in g.value] == path
    assert [r.turn_index for r in g.value] == list(range(len(path)))
