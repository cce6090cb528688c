"""A Telegram bot (aiogram 3) that answers in Russian with gemma-3-27b through llm-limits.

Each text message is one ``Client.agenerate(..., caller="telegram-bot", end_user=...)``: the bot
shares the keys with every other process on the quota database, its class (``interactive``)
is served first, and one person cannot take the whole bot's minute (``end_user_rpm``). While a
call waits, the chat shows "typing" and one message tells the person their place in line; the
answer then replaces that message. A refusal is told in Russian with its reason and when to try
again. aiogram runs each update as a task of its own, so one person's wait never holds up
anyone else's message.

    export BOT_TOKEN=123456:ABC...                     # from @BotFather
    export LLM_LIMITS_DB_URL=postgresql://...          # the quota database (pooler, port 6543)
    export GOOGLE_API_KEY_BOT=AIza...                  # the key rows' env_var_name
    python examples/telegram_bot/bot.py

See examples/telegram_bot/README.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os

from aiogram import Bot, Dispatcher, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import CommandStart
from aiogram.types import Message
from aiogram.utils.chat_action import ChatActionSender
from google.genai import errors as genai_errors
from google.genai import types

import llm_limits

log = logging.getLogger("telegram_bot")

MODEL = "gemma-3-27b"
CALLER = "telegram-bot"  # in class interactive: llm-limits classes assign telegram-bot interactive
MAX_WAIT = 30.0  # seconds a message may stand in line before the bot gives up on it
MAX_OUTPUT_TOKENS = 1024
TELEGRAM_TEXT_LIMIT = 4096  # characters in one message

# --- what the bot says ------------------------------------------------------------------------

GREETING = "Здравствуйте! Напишите вопрос, и я отвечу."
ONLY_TEXT = "Я понимаю только текстовые сообщения."
IN_LINE = "⏳ Вы в очереди: {position}-й, примерно {wait}"
# Out of line: the person's own next slot (end_user_rpm) is what the message waits for.
TOO_FAST = "⏳ Вы пишете слишком часто: отвечу примерно через {wait}"
EMPTY_ANSWER = "Модель ничего не ответила. Попробуйте переформулировать вопрос."
FAILED = "Не получилось ответить. Попробуйте позже."
# A refusal's reason (acquire's) -> what the person is told; {after} is "через 12 с" when the
# database knows when the limit frees, else "позже".
REFUSALS = {
    "end_user_limit": "Слишком много сообщений, попробуйте {after}",
    "rpd": "Бот исчерпал дневной лимит, попробуйте {after}",
    "caller_budget": "Бот исчерпал дневной лимит, попробуйте {after}",
}
BUSY = "Сейчас слишком много запросов, попробуйте {after}"  # rpm, tpm, wait_timeout, ...
BLOCKED = "Бот для вас недоступен."  # end_user_limit with no time: the person is blocked


def duration(seconds: float) -> str:
    """Seconds as a person reads them: "12 с", "5 мин", "7 ч" (rounded up, never 0)."""
    s = max(1, math.ceil(seconds))
    if s < 90:
        return f"{s} с"
    if s < 90 * 60:
        return f"{math.ceil(s / 60)} мин"
    return f"{math.ceil(s / 3600)} ч"


def refusal_text(reason: str, retry_after: float | None) -> str:
    """The Russian answer to a refusal: its reason, and its time when the database knows it."""
    if reason == "end_user_limit" and retry_after is None:
        return BLOCKED
    after = "позже" if retry_after is None else f"через {duration(retry_after)}"
    return REFUSALS.get(reason, BUSY).format(after=after)


def end_user_of(user_id: int) -> str:
    """The person as the quota database is told: their Telegram id, which the database keeps
    only as a keyed hash (``llm-limits end-users block tg:123`` finds them by the same id)."""
    return f"tg:{user_id}"


# --- one message's answer ---------------------------------------------------------------------


class Reply:
    """The one message the bot writes back: sent at the first place in line, then edited as the
    place changes, and at last edited into the answer (or sent, if the call never waited)."""

    def __init__(self, question: Message) -> None:
        self.question = question
        self.message: Message | None = None
        self.text = ""

    async def in_line(self, place: llm_limits.Waiting) -> None:
        """``on_wait``: the place and the expected wait, edited only when the text changes
        (Telegram refuses an edit that changes nothing)."""
        wait = duration(place.expected_wait_ms / 1000)
        if place.position is None:
            await self.show(TOO_FAST.format(wait=wait))
        else:
            await self.show(IN_LINE.format(position=place.position, wait=wait))

    async def show(self, text: str) -> None:
        """``text`` in the reply message; past Telegram's limit the rest follows as new
        messages."""
        first, rest = text[:TELEGRAM_TEXT_LIMIT], text[TELEGRAM_TEXT_LIMIT:]
        if first != self.text:
            self.message = await self._put(first)
            self.text = first
        for at in range(0, len(rest), TELEGRAM_TEXT_LIMIT):
            await self.question.answer(rest[at : at + TELEGRAM_TEXT_LIMIT])

    async def _put(self, text: str) -> Message:
        if self.message is not None:
            try:
                edited = await self.message.edit_text(text)
                if isinstance(edited, Message):
                    return edited
            except TelegramBadRequest as exc:  # deleted meanwhile: write a new one
                log.warning("could not edit the reply: %s", exc.message)
        return await self.question.reply(text)


async def ask(llm: llm_limits.Client, message: Message, reply: Reply, end_user: str,
              max_wait: float) -> str:  # fmt: skip
    """The model's answer to ``message``, or what to tell the person instead."""
    config = types.GenerateContentConfig(max_output_tokens=MAX_OUTPUT_TOKENS)
    try:
        response = await llm.agenerate(
            MODEL, message.text or "", mode="WAIT", max_wait=max_wait, config=config,
            caller=CALLER, end_user=end_user, on_wait=reply.in_line,
        )  # fmt: skip
    except llm_limits.RateLimited as exc:
        log.info("refused: %s (retry after %s s)", exc.reason, exc.retry_after)
        return refusal_text(exc.reason, exc.retry_after)
    except (llm_limits.LimitsError, genai_errors.APIError) as exc:
        log.error("no answer: %s", exc)
        return FAILED
    return response.text or EMPTY_ANSWER


# --- the handlers -----------------------------------------------------------------------------


async def on_start(message: Message) -> None:
    await message.answer(GREETING)


async def on_text(message: Message, bot: Bot, llm: llm_limits.Client, max_wait: float) -> None:
    """One person's question: "typing" until the answer is ready, their place in line while
    they wait, then the answer or the refusal, all in one message."""
    person = message.from_user.id if message.from_user else message.chat.id
    reply = Reply(message)
    async with ChatActionSender.typing(bot=bot, chat_id=message.chat.id):
        text = await ask(llm, message, reply, end_user_of(person), max_wait)
    await reply.show(text)


async def on_other(message: Message) -> None:
    await message.answer(ONLY_TEXT)


def build_dispatcher(llm: llm_limits.Client, max_wait: float = MAX_WAIT) -> Dispatcher:
    """The bot's Dispatcher; ``llm`` and ``max_wait`` reach the handlers as keyword
    arguments."""
    router = Router(name="llm")
    router.message.register(on_start, CommandStart())
    router.message.register(on_text, F.text)
    router.message.register(on_other)
    dp = Dispatcher(llm=llm, max_wait=max_wait)
    dp.include_router(router)
    return dp


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bot = Bot(os.environ["BOT_TOKEN"])
    async with llm_limits.Client.from_env(caller=CALLER) as llm:
        dp = build_dispatcher(llm)
        # handle_as_tasks (aiogram's default): each update is a task of its own, so a person
        # waiting in line holds up no one else's message. Polling closes the bot's session.
        await dp.start_polling(bot, handle_as_tasks=True)


if __name__ == "__main__":
    asyncio.run(main())
