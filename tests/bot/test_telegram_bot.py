"""The Telegram bot as people use it: aiogram's Dispatcher is fed Telegram's own ``Update``
objects and its Bot API calls are recorded (no network); behind it, the real client through
PgBouncer, the real SDK and the fake Gemini (see conftest: 3 s windows, one request each).

* a question is answered in Russian, with "typing" shown first; the database keeps the person
  (``end_user``) as a keyed hash only, never their Telegram id;
* people who wait are told their place in one message, edited as the place counts down and at
  last into the answer; everyone gets their own answer; "typing" is repeated during a long wait;
* a WAIT that runs out is answered with the refusal and its time, in Russian, in that message;
* a person over the per-person limit is told "Слишком много сообщений, попробуйте через N с",
  and is answered again once N s have passed; one whose next slot comes within the wait is
  told they write too often, not a place in line; a blocked person is told the bot is not for
  them;
* under aiogram's polling, a person's /start is answered while another person waits in line.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from aiogram import Bot, Dispatcher
from aiogram.methods import EditMessageText, SendChatAction, SendMessage

from examples.telegram_bot import bot as telegram_bot
from llm_limits import Client
from tests.client.support import GEMMA, Conn

from .conftest import WINDOW_MS
from .recording_session import RecordingSession, text_update

IN_LINE = re.compile(r"^⏳ Вы в очереди: (\d+)-й, примерно (\d+) с$")


def answer_to(text: str) -> str:
    return f"fake reply to: {text}"  # what the fake Gemini answers


async def until(done: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for ``done()`` (the recorded Bot API calls reach a state), at most ``timeout`` s."""
    async with asyncio.timeout(timeout):
        while not done():
            await asyncio.sleep(0.02)


def answered(telegram: RecordingSession, chat: int) -> Callable[[], bool]:
    return lambda: any(not IN_LINE.match(t) for t in telegram.texts(chat))


def in_line(telegram: RecordingSession, chat: int) -> Callable[[], bool]:
    return lambda: any(IN_LINE.match(t) for t in telegram.texts(chat))


async def test_a_question_is_answered_in_russian_while_typing(
    dispatcher: Dispatcher, bot: Bot, telegram: RecordingSession, bot_db: Conn
) -> None:
    update = text_update(101, "Привет! Что сегодня в программе?")
    await dispatcher.feed_update(bot, update)

    calls = telegram.of(101)
    assert [c.name for c in calls] == ["SendChatAction", "SendMessage"], calls
    assert calls[0].method.action == "typing"
    reply = calls[1].method
    assert isinstance(reply, SendMessage) and reply.text == answer_to(update.message.text)
    assert reply.reply_parameters and reply.reply_parameters.message_id == update.message.message_id
    person = telegram_bot.end_user_of(101)
    rows = bot_db.execute(
        "select caller, model, end_user_hash = google_ai_internal.end_user_hash(%s)"
        " from public.google_ai_reservations",
        (person,),
    ).fetchall()
    assert rows == [(telegram_bot.CALLER, GEMMA, True)]
    for table in ("google_ai_reservations", "google_ai_audit_records", "token_usage"):
        kept = bot_db.execute(
            f"select count(*) from public.{table} as t where t::text like %s", (f"%{person}%",)
        ).fetchone()
        assert kept == (0,), table  # a Telegram id is personal data: only its keyed hash is kept


async def test_people_in_line_see_their_place_count_down_then_their_answer(
    dispatcher: Dispatcher, bot: Bot, telegram: RecordingSession
) -> None:
    questions = {201: "Когда начало?", 202: "Где парковка?", 203: "Можно с собакой?"}
    tasks = []
    for person, text in questions.items():  # each one once the one before is answered or in line
        tasks.append(asyncio.create_task(dispatcher.feed_update(bot, text_update(person, text))))
        await until(lambda p=person: answered(telegram, p)() or in_line(telegram, p)())
    await asyncio.gather(*tasks)

    assert telegram.texts(201) == [answer_to(questions[201])]
    for person in (202, 203):
        *told, last = telegram.texts(person)
        assert last == answer_to(questions[person]), telegram.texts(person)
        places = [int(IN_LINE.match(t).group(1)) for t in told]  # type: ignore[union-attr]
        assert places and places == sorted(places, reverse=True), told
        # One message: sent at the first place, then edited (only when its text changed).
        sent = telegram.of(person, SendMessage)
        edits = telegram.of(person, EditMessageText)
        assert len(sent) == 1 and len(edits) == len(told)
        assert len(telegram.shown(person)) == 1
        assert {e.method.message_id for e in edits} == set(telegram.shown(person))
    places_203 = [int(IN_LINE.match(t).group(1)) for t in telegram.texts(203)[:-1]]  # type: ignore[union-attr]
    assert places_203[0] == 2 and places_203[-1] == 1, telegram.texts(203)
    # 203 waited two windows (over 5 s): "typing" was sent again meanwhile.
    assert len(telegram.of(203, SendChatAction)) >= 2


async def test_a_wait_that_runs_out_is_told_in_russian_with_its_time(
    llm: Client, bot: Bot, telegram: RecordingSession
) -> None:
    impatient = telegram_bot.build_dispatcher(llm, max_wait=1.0)
    await impatient.feed_update(bot, text_update(301, "Первый вопрос"))  # takes the window
    await impatient.feed_update(bot, text_update(302, "Второй вопрос"))

    *told, last = telegram.texts(302)
    assert told and all(IN_LINE.match(t) for t in told), told
    match = re.fullmatch(r"Сейчас слишком много запросов, попробуйте через (\d+) с", last)
    assert match, last
    assert 1 <= int(match.group(1)) <= (WINDOW_MS + 1000) / 1000
    assert len(telegram.of(302, SendMessage)) == 1  # the place in line became the refusal


async def test_a_flood_from_one_person_is_refused_with_the_time_to_wait(
    llm: Client, bot: Bot, telegram: RecordingSession, bot_db: Conn
) -> None:
    """Two messages a window per person; the bot waits 1 s at most, less than the person's
    next slot, so the third is refused at once, with a time that is true."""
    bot_db.execute("update public.google_ai_model_limits set rpm = 30 where model = %s", (GEMMA,))
    bot_db.execute(
        "update public.google_ai_caller_classes set end_user_rpm = 2 where name = 'interactive'"
    )
    impatient = telegram_bot.build_dispatcher(llm, max_wait=1.0)
    for i in range(3):
        await impatient.feed_update(bot, text_update(401, f"Вопрос номер {i + 1}"))

    texts = telegram.texts(401)
    assert texts[:2] == [answer_to("Вопрос номер 1"), answer_to("Вопрос номер 2")]
    match = re.fullmatch(r"Слишком много сообщений, попробуйте через (\d+) с", texts[2])
    assert match and len(texts) == 3, texts  # refused at once: no place in line was shown
    after = int(match.group(1))
    assert 1 <= after <= (WINDOW_MS + 1000) / 1000
    # Someone else is served meanwhile: the limit is the person's, not the bot's.
    await impatient.feed_update(bot, text_update(402, "А мне можно?"))
    assert telegram.texts(402) == [answer_to("А мне можно?")]
    # Once the time told has passed, the person is answered again.
    await asyncio.sleep(after)
    await impatient.feed_update(bot, text_update(401, "Вопрос номер 4"))
    assert telegram.texts(401)[3:] == [answer_to("Вопрос номер 4")]


async def test_a_person_waiting_for_their_own_next_slot_is_told_so_not_a_place(
    dispatcher: Dispatcher, bot: Bot, telegram: RecordingSession, bot_db: Conn
) -> None:
    """One message a window per person, and the bot waits 30 s: the second message waits out
    of line for the person's next slot, and the person is told that, not a place in line."""
    bot_db.execute("update public.google_ai_model_limits set rpm = 30 where model = %s", (GEMMA,))
    bot_db.execute(
        "update public.google_ai_caller_classes set end_user_rpm = 1 where name = 'interactive'"
    )
    await dispatcher.feed_update(bot, text_update(701, "Первый"))
    await dispatcher.feed_update(bot, text_update(701, "Второй"))

    first, *told, last = telegram.texts(701)
    assert (first, last) == (answer_to("Первый"), answer_to("Второй"))
    assert told and all(
        re.fullmatch(r"⏳ Вы пишете слишком часто: отвечу примерно через \d+ с", t) for t in told
    ), told


async def test_a_blocked_person_is_told_so(
    dispatcher: Dispatcher, bot: Bot, telegram: RecordingSession, bot_db: Conn
) -> None:
    bot_db.execute("select public.block_end_user(%s)", (telegram_bot.end_user_of(601),))
    await dispatcher.feed_update(bot, text_update(601, "Привет"))
    assert telegram.texts(601) == ["Бот для вас недоступен."]


async def test_under_polling_one_persons_wait_holds_up_no_one_else(
    dispatcher: Dispatcher, bot: Bot, telegram: RecordingSession
) -> None:
    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, polling_timeout=1)
    )
    try:
        telegram.push(text_update(501, "Займу окно"))
        await until(answered(telegram, 501))
        telegram.push(text_update(502, "Подожду в очереди"))
        await until(in_line(telegram, 502))
        telegram.push(text_update(503, "/start"))
        await until(answered(telegram, 503))
        assert not answered(telegram, 502)(), "502 was answered before 503: it never waited"
        assert telegram.texts(503) == [telegram_bot.GREETING]
        await until(answered(telegram, 502))
        assert telegram.texts(502)[-1] == answer_to("Подожду в очереди")
    finally:
        await dispatcher.stop_polling()
        await polling
