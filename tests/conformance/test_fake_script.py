"""The fake Gemini's script, which the conformance cases drive: what it refuses to take."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from llm_limits.local.fake_gemini import SCRIPT_PATH, FakeGemini

BAD_ANSWERS = [
    {"status": 99, "body": {}},
    {"status": 429},
    {"status": 429, "body": {}, "hang_s": 1},
    {"hang_s": -1},
    {"cut": True, "retry": 1},
    {},
    {"note": "only a note"},
]


@pytest.mark.parametrize("answer", BAD_ANSWERS, ids=json.dumps)
def test_a_script_it_cannot_follow_is_refused_whole(answer: dict[str, object]) -> None:
    with FakeGemini({"p": ["k"]}, vocabulary=False) as fake:
        with pytest.raises(ValueError):
            fake.script([{"normal": True}, answer])
        req = urllib.request.Request(
            fake.base_url + SCRIPT_PATH,
            data=json.dumps({"answers": [{"normal": True}, answer]}).encode(),
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 400
        # Nothing of it was taken: the next call is answered normally.
        assert fake.script([]) == 0


def test_the_endpoint_says_how_many_answers_are_scripted() -> None:
    with FakeGemini({"p": ["k"]}, vocabulary=False) as fake:
        for expected in (2, 3):
            answers = [{"normal": True}] * (expected - fake.script([]))
            req = urllib.request.Request(
                fake.base_url + SCRIPT_PATH,
                data=json.dumps({"answers": answers}).encode(),
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert json.loads(resp.read()) == {"scripted": expected}
