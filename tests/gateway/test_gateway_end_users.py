"""x-llm-limits-end-user through the llm-gateway: the person reaches acquire (its keyed hash in
the ledger), their per-person limit is a Google-shaped 429 with reason end_user_limit, and a bad
value is a 400 that spends nothing."""

from __future__ import annotations

import json

import pytest
from google.genai import errors

from llm_limits.local.fake_gemini import FakeGemini

from ..client.support import Conn
from .conftest import StartGateway, ledger
from .harness import add_caller
from .test_gateway_e2e import GEMMA, generate_requests, post_raw

END_USER = "x-llm-limits-end-user"


def hashed_grants(db: Conn, person: str) -> int:
    row = db.execute(
        "select count(*) from public.google_ai_reservations"
        " where end_user_hash = google_ai_internal.end_user_hash(%s::text)",
        (person,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_person_reaches_acquire_and_their_limit_is_a_429(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "telegram-bot")
    gw.secrets.append(token)
    keyed_db.execute(
        "insert into public.google_ai_caller_policies (caller, caller_class)"
        " values ('telegram-bot', 'interactive')"
    )
    sdk = gw.sdk(token, **{END_USER: "tg:777", "x-llm-limits-mode": "NO_WAIT"})
    for _ in range(6):  # interactive: 6 a minute per person
        assert sdk.models.generate_content(model=GEMMA, contents="hi").text

    with pytest.raises(errors.ClientError) as caught:
        sdk.models.generate_content(model=GEMMA, contents="hi")

    err = caught.value
    assert (err.code, err.status) == (429, "RESOURCE_EXHAUSTED")
    assert err.response.headers["x-llm-limits-reason"] == "end_user_limit"
    assert 0 < int(err.response.headers["retry-after"]) <= 61
    info = [d for d in err.details["error"]["details"] if d["@type"].endswith("ErrorInfo")]
    assert info[0]["reason"] == "END_USER_LIMIT"
    assert hashed_grants(keyed_db, "tg:777") == 6
    assert generate_requests(fake) == 6  # the refusal never reached Google
    # Another person of the same bot is served.
    other = gw.sdk(token, **{END_USER: "tg:778", "x-llm-limits-mode": "NO_WAIT"})
    assert other.models.generate_content(model=GEMMA, contents="hi").text
    assert hashed_grants(keyed_db, "tg:778") == 1


@pytest.mark.parametrize("value", ["", "x" * 201], ids=["empty", "201 chars"])
def test_a_bad_end_user_header_is_a_400_that_spends_nothing(
    start_gateway: StartGateway, keyed_db: Conn, fake: FakeGemini, value: str
) -> None:
    gw = start_gateway()
    token = add_caller(keyed_db, "telegram-bot")
    gw.secrets.append(token)
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    headers = {"content-type": "application/json", "x-goog-api-key": token, END_USER: value}
    code, answer = post_raw(gw, f"/v1beta/models/{GEMMA}:generateContent", body, headers)
    assert (code, answer["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert "LL007" in answer["error"]["message"] and "end_user" in answer["error"]["message"]
    assert ledger(keyed_db) == []
    assert keyed_db.execute("select count(*) from public.google_ai_refusals").fetchone() == (0,)
    assert generate_requests(fake) == 0
