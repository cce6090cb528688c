"""Telegram for the bot's tests and bench: aiogram's own types, no network.

``RecordingSession`` is an aiogram ``BaseSession``: every Bot API call the bot makes is
recorded (the method object and when it was made) and answered the way Telegram answers it,
through aiogram's own response parsing (``check_response``): ``sendMessage`` returns the new
``Message``, ``editMessageText`` the edited one (and a 400 "message is not modified" when the
text is the same, "message to edit not found" for a message it never sent), ``sendChatAction``
True. ``getUpdates`` hands out what ``push`` queued, so the bot can also run under aiogram's
own polling. ``text_update`` builds the ``Update`` of one person's text message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import (
    DeleteWebhook,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendChatAction,
    SendMessage,
    TelegramMethod,
)
from aiogram.types import Chat, Message, MessageEntity, Update, User

TOKEN = "4200000001:AAE_recording-session-token-no-network"
BOT_USER = {"id": 4200000001, "is_bot": True, "first_name": "Бот", "username": "llm_limits_bot"}
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are"
    " exactly the same as a current content and reply markup of the message"
)


@dataclass(frozen=True)
class Sent:
    """One Bot API call: the method object as the bot made it, and when (monotonic seconds)."""

    method: TelegramMethod[Any]
    at: float

    @property
    def name(self) -> str:
        return type(self.method).__name__


class RecordingSession(BaseSession):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Sent] = []
        self.updates: asyncio.Queue[Update] = asyncio.Queue()
        self._texts: dict[tuple[int, int], list[str]] = {}  # (chat, message id) -> its texts
        self._replies: dict[tuple[int, int], int] = {}  # (chat, question's id) -> the reply's
        self._ids = itertools.count(1)

    def bot(self) -> Bot:
        return Bot(TOKEN, session=self)

    def push(self, *updates: Update) -> None:
        """Updates for the next ``getUpdates`` (the bot under ``start_polling``)."""
        for update in updates:
            self.updates.put_nowait(update)

    def of(self, chat_id: int, *kinds: type[TelegramMethod[Any]]) -> list[Sent]:
        """The calls of these kinds (all kinds when none is given) made to ``chat_id``."""
        return [
            c for c in self.calls
            if getattr(c.method, "chat_id", None) == chat_id
            and (not kinds or isinstance(c.method, kinds))
        ]  # fmt: skip

    def texts(self, chat_id: int) -> list[str]:
        """What ``chat_id`` was shown, in order: each message sent and each edit's new text."""
        return [str(getattr(c.method, "text", "")) for c in self.of(chat_id, SendMessage,
                                                                    EditMessageText)]  # fmt: skip

    def shown(self, chat_id: int) -> dict[int, str]:
        """What each message of the bot's in ``chat_id`` says now, by message id."""
        return {m: texts[-1] for (c, m), texts in self._texts.items() if c == chat_id}

    def reply_to(self, chat_id: int, message_id: int) -> list[str]:
        """Every text the bot's reply to message ``message_id`` showed, in order (the last is
        what it says now; none: no reply yet)."""
        reply = self._replies.get((chat_id, message_id))
        return [] if reply is None else list(self._texts[(chat_id, reply)])

    async def make_request(
        self, bot: Bot, method: TelegramMethod[Any], timeout: int | None = None
    ) -> Any:
        if isinstance(method, GetUpdates):  # not recorded: the polling loop's own traffic
            status, result = 200, await self._updates(method)
        else:
            self.calls.append(Sent(method, time.monotonic()))
            status, result = self._answer(method)
        body = {"ok": True, "result": result} if status == 200 else {
            "ok": False, "error_code": status, "description": result}  # fmt: skip
        return self.check_response(bot, method, status, json.dumps(body)).result

    def _answer(self, method: TelegramMethod[Any]) -> tuple[int, Any]:
        if isinstance(method, SendMessage):
            message_id = next(self._ids)
            chat = int(method.chat_id)
            self._texts[(chat, message_id)] = [method.text]
            if method.reply_parameters is not None and method.reply_parameters.message_id:
                self._replies[(chat, method.reply_parameters.message_id)] = message_id
            return 200, _message(chat, message_id, method.text)
        if isinstance(method, EditMessageText):
            key, text = (int(method.chat_id or 0), int(method.message_id or 0)), str(method.text)
            if key not in self._texts:
                return 400, "Bad Request: message to edit not found"
            if self._texts[key][-1] == text:
                return 400, NOT_MODIFIED
            self._texts[key].append(text)
            return 200, _message(*key, text)
        if isinstance(method, SendChatAction | DeleteWebhook):
            return 200, True
        if isinstance(method, GetMe):
            return 200, BOT_USER
        return 400, f"Bad Request: {type(method).__name__} is not answered by the recording session"

    async def _updates(self, method: GetUpdates) -> list[dict[str, Any]]:
        try:
            first = await asyncio.wait_for(self.updates.get(), timeout=method.timeout or 0.01)
        except TimeoutError:
            return []
        batch = [first]
        while not self.updates.empty():
            batch.append(self.updates.get_nowait())
        return [u.model_dump(mode="json", by_alias=True, exclude_none=True) for u in batch]

    async def close(self) -> None:
        pass

    async def stream_content(
        self, url: str, headers: dict[str, Any] | None = None, timeout: int = 30,
        chunk_size: int = 65536, raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:  # fmt: skip
        raise NotImplementedError("the recording session downloads nothing")
        yield b""  # pragma: no cover


def _message(chat_id: int, message_id: int, text: str) -> dict[str, Any]:
    chat = {"id": chat_id, "type": "private" if chat_id > 0 else "group"}
    return {"message_id": message_id, "date": int(time.time()), "chat": chat,
            "from": BOT_USER, "text": text}  # fmt: skip


_update_ids = itertools.count(1)


def text_update(user_id: int, text: str, chat_id: int | None = None) -> Update:
    """The ``Update`` Telegram sends when person ``user_id`` writes ``text`` (in their private
    chat with the bot unless ``chat_id`` names a group); a leading "/command" is marked as one."""
    user = User(id=user_id, is_bot=False, first_name=f"Человек {user_id}", language_code="ru")
    chat = (
        Chat(id=user_id, type="private", first_name=user.first_name)
        if chat_id is None
        else Chat(id=chat_id, type="group", title="Группа")
    )
    entities = None
    if text.startswith("/"):
        entities = [MessageEntity(type="bot_command", offset=0, length=len(text.split()[0]))]
    update_id = next(_update_ids)
    message = Message(
        message_id=update_id, date=datetime.now(UTC), chat=chat, from_user=user, text=text,
        entities=entities,
    )  # fmt: skip
    return Update(update_id=update_id, message=message)
