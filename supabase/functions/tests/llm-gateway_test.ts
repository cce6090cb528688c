// Unit tests of the llm-gateway: request shaping, the SSE watcher, tokens, the refusals the
// handler makes before it touches the database, how a failed exchange is named for settle, and
// the protocol's loop against a stub database and a stub Google. The end-to-end behaviour
// (Postgres, the SDK, the fake Gemini) is tests/gateway and tests/conformance in pytest.

import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";

import {
  constantTimeEqual,
  sha256,
  toHex,
  tokenOf,
} from "../llm-gateway/callers.ts";
import { formatDelay, GatewayError, refusal } from "../llm-gateway/errors.ts";
import { foldSystemInstruction, shapeRequest } from "../llm-gateway/gemma.ts";
import {
  createHandler,
  MODEL_HEADER,
  PROGRESS_HEADER,
  progressOf,
  respond,
  waitOf,
} from "../llm-gateway/gateway.ts";
import { KeyRing } from "../llm-gateway/keys.ts";
import { type Call, type Carrier, carry } from "../llm-gateway/protocol.ts";
import { SseWatcher } from "../llm-gateway/sse.ts";
import { byteBound } from "../llm-gateway/tokens.ts";
import { wireError } from "../llm-gateway/upstream.ts";
import { type Grant, RIDE_OUT_MS, type Sql } from "../llm-gateway/db.ts";
import { QUEUE_POSITION_HEADER, WAITED_HEADER } from "../llm-gateway/queue.ts";

const GEMMA = "gemma-3-27b-it";

Deno.test("Gemma: a system instruction is folded into the first user turn", () => {
  const shaped = shapeRequest(GEMMA, {
    systemInstruction: {
      parts: [{ text: "Отвечай кратко." }, { text: "По-русски." }],
    },
    contents: [{ role: "user", parts: [{ text: "Привет" }] }, {
      role: "model",
      parts: [{ text: "Да" }],
    }],
    generationConfig: { temperature: 0.2 },
  });
  deepStrictEqual(shaped, {
    contents: [
      {
        role: "user",
        parts: [{ text: "Отвечай кратко.\nПо-русски.\n\n" }, {
          text: "Привет",
        }],
      },
      { role: "model", parts: [{ text: "Да" }] },
    ],
    generationConfig: { temperature: 0.2 },
  });
});

Deno.test("Gemma: snake_case system_instruction and a leading model turn", () => {
  const shaped = shapeRequest(GEMMA, {
    system_instruction: "Be brief.",
    contents: [{ role: "model", parts: [{ text: "Hi" }] }],
  });
  deepStrictEqual(shaped.contents, [
    { role: "user", parts: [{ text: "Be brief." }] },
    { role: "model", parts: [{ text: "Hi" }] },
  ]);
  equal("system_instruction" in shaped, false);
  deepStrictEqual(foldSystemInstruction(undefined, "S"), [{
    role: "user",
    parts: [{ text: "S" }],
  }]);
});

Deno.test("Gemma: JSON mode, schemas, tools and non-text system parts are a 400", () => {
  const contents = [{ parts: [{ text: "hi" }] }];
  for (
    const body of [
      { contents, generationConfig: { responseMimeType: "application/json" } },
      { contents, generation_config: { response_schema: { type: "OBJECT" } } },
      { contents, generationConfig: { responseJsonSchema: {} } },
      { contents, tools: [{ functionDeclarations: [{ name: "f" }] }] },
      {
        contents,
        systemInstruction: {
          parts: [{ inlineData: { mimeType: "image/png", data: "" } }],
        },
      },
    ]
  ) {
    throws(
      () => shapeRequest(GEMMA, body),
      (e: unknown) => e instanceof GatewayError && e.code === 400,
    );
  }
  // text/plain is not JSON mode; other models pass untouched.
  ok(
    shapeRequest(GEMMA, {
      contents,
      generationConfig: { responseMimeType: "text/plain" },
    }),
  );
  const gemini = { contents, systemInstruction: "x", tools: [{}] };
  equal(shapeRequest("gemini-2.5-flash", gemini), gemini);
});

Deno.test("SSE: events split across chunks; the last one is kept", () => {
  const events = [
    {
      candidates: [{ content: { parts: [{ text: "При" }] } }],
      usageMetadata: { promptTokenCount: 9 },
    },
    {
      candidates: [{
        content: { parts: [{ text: "вет" }] },
        finishReason: "STOP",
      }],
      usageMetadata: { promptTokenCount: 9, candidatesTokenCount: 4 },
    },
  ];
  const bytes = new TextEncoder().encode(
    events.map((e) => `data: ${JSON.stringify(e)}\r\n\r\n`).join(""),
  );
  const watcher = new SseWatcher();
  // Cut inside a multi-byte character and inside an event.
  for (const [from, to] of [[0, 7], [7, 50], [50, 51], [51, bytes.length]]) {
    watcher.push(bytes.slice(from, to));
  }
  deepStrictEqual(watcher.end(), events[1]);
});

Deno.test("tokens: header or Bearer; digests compared in constant time", async () => {
  equal(tokenOf(new Headers({ "x-goog-api-key": " llmk_a " })), "llmk_a");
  equal(tokenOf(new Headers({ authorization: "Bearer llmk_b" })), "llmk_b");
  equal(tokenOf(new Headers({ authorization: "Basic abc" })), null);
  equal(tokenOf(new Headers()), null);
  const digest = await sha256("llmk_a");
  equal(
    toHex(digest),
    "be6082de961e0f91765fd517d972d445cadb7ddaedaa0b32f42214e9406faf89",
  ); // sha256sum of the same text
  ok(constantTimeEqual(digest, await sha256("llmk_a")));
  equal(constantTimeEqual(digest, await sha256("llmk_b")), false);
  equal(constantTimeEqual(digest, digest.slice(0, 31)), false);
  equal(constantTimeEqual(new Uint8Array(), digest), false);
});

Deno.test("refusals: RetryInfo in Google's duration format", () => {
  deepStrictEqual([formatDelay(21000), formatDelay(1501), formatDelay(0)], [
    "21s",
    "1.6s",
    "0s",
  ]);
  const body = refusal(GEMMA, "rpm", 12_340).body() as {
    error: { code: number; details: unknown[] };
  };
  equal(body.error.code, 429);
  deepStrictEqual(body.error.details[1], {
    "@type": "type.googleapis.com/google.rpc.RetryInfo",
    retryDelay: "12.4s",
  });
  equal(
    (refusal(GEMMA, "rpd", null).body() as { error: { details: unknown[] } })
      .error.details.length,
    1,
  );
});

Deno.test("wait headers: WAIT by default, NO_WAIT on request, bad values refused", () => {
  deepStrictEqual(waitOf(new Headers(), 30_000), {
    mode: "WAIT",
    maxWaitMs: 30_000,
  });
  deepStrictEqual(
    waitOf(new Headers({ "x-llm-limits-max-wait": "2.5" }), 30_000),
    { mode: "WAIT", maxWaitMs: 2500 },
  );
  deepStrictEqual(
    waitOf(new Headers({ "x-llm-limits-mode": "no_wait" }), 30_000),
    {
      mode: "NO_WAIT",
      maxWaitMs: 30_000,
    },
  );
  for (
    const [name, value] of [["x-llm-limits-mode", "SOMETIMES"], [
      "x-llm-limits-max-wait",
      "-1",
    ], [
      "x-llm-limits-max-wait",
      "soon",
    ]]
  ) {
    throws(() => waitOf(new Headers({ [name]: value }), 1000), GatewayError);
  }
});

Deno.test("the byte bound", () => {
  const russian =
    "Белые ночи в Петербурге длятся с конца мая до середины июля.";
  // Never below the UTF-8 byte count of the text, which bounds SentencePiece's tokens.
  ok(
    byteBound({ contents: [{ parts: [{ text: russian }] }] }) >=
      new TextEncoder().encode(russian).length,
  );
});

Deno.test("the handler refuses bad requests before it touches the database", async () => {
  const untouchable = new Proxy(() => {}, {
    apply() {
      throw new Error("the database was reached");
    },
    get() {
      throw new Error("the database was reached");
    },
  }) as unknown as Sql;
  const logged: unknown[] = [];
  const handle = createHandler({
    sql: untouchable,
    keys: new KeyRing(untouchable, () => undefined),
    googleBaseUrl: "http://127.0.0.1:9",
    maxBodyBytes: 64,
    timeoutMs: 1000,
    maxAttempts: 3,
    defaultMaxWaitMs: 0,
    log: (line) => logged.push(line),
  });
  const url = `http://gw/llm-gateway/v1beta/models/${GEMMA}:generateContent`;
  const cases: [Request, number][] = [
    [new Request(url, { method: "POST", body: "{}" }), 401],
    [
      new Request(url, { method: "GET", headers: { "x-goog-api-key": "t" } }),
      405,
    ],
    [
      new Request("http://gw/v1beta/models", { method: "POST", body: "{}" }),
      404,
    ],
    [
      new Request(url, {
        method: "POST",
        headers: { "x-goog-api-key": "t" },
        body: "{",
      }),
      400,
    ],
    [
      new Request(url, {
        method: "POST",
        headers: { "x-goog-api-key": "t" },
        body: "[1]",
      }),
      400,
    ],
    [
      new Request(url, {
        method: "POST",
        headers: { "x-goog-api-key": "t" },
        body: "x".repeat(65),
      }),
      413,
    ],
    [
      new Request(url, {
        method: "POST",
        headers: { "x-goog-api-key": "t" },
        body: '{"contents": []}',
      }),
      400,
    ],
  ];
  for (const [req, status] of cases) {
    const res = await handle(req);
    const body = await res.json();
    equal(res.status, status, `${req.method} ${req.url}`);
    equal(body.error.code, status);
    ok(body.error.status && body.error.message);
  }
  deepStrictEqual(logged, []);
});

Deno.test("a failed exchange, in settle's words", async () => {
  const quiet = new AbortController().signal;
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  closed.close(); // a port nobody listens on: no connection, nothing sent
  const url = `http://127.0.0.1:${closed.addr.port}/`;
  const refused = await fetch(url, { signal: quiet }).catch((e) => e);
  equal(wireError(refused, quiet), "connect_failed");
  equal(
    wireError(new TypeError("error reading a body"), quiet),
    "connection_lost",
  );
  const timedOut = new AbortController();
  timedOut.abort(new DOMException("timed out", "TimeoutError"));
  equal(wireError(new Error("x"), timedOut.signal), "timeout");
  const left = new AbortController();
  left.abort(new DOMException("gone", "AbortError"));
  equal(wireError(new Error("x"), left.signal), "cancelled");
});

Deno.test("respond: Google's answer as it came, naming the model that answered", async () => {
  const answer = respond("gemma-3-27b-it", {
    status: 429,
    type: "application/json",
    text: '{"error": {"code": 429}}',
    json: null,
  });
  equal(answer.status, 429);
  equal(answer.headers.get(MODEL_HEADER), "gemma-3-27b-it");
  equal(await answer.text(), '{"error": {"code": 429}}');
  const codes = ["timeout", "cancelled", "connection_lost", "not_sent"].map((
    wire,
  ) => respond(GEMMA, { wire } as { wire: "timeout" }).status);
  deepStrictEqual(codes, [504, 499, 503, 503]);
});

/** A stand-in for postgres.js: each statement is answered by `answer(sql, values)`. */
function stubSql(answer: (text: string, values: unknown[]) => unknown[]): Sql {
  const sql = (strings: TemplateStringsArray, ...values: unknown[]) =>
    Object.assign(Promise.resolve(answer(strings.join("$"), values)), {
      cancel() {},
    });
  return Object.assign(sql, { array: (a: unknown[]) => a }) as unknown as Sql;
}

/** An acquire's grant of key k1 (env var KEY_1), as the stub database answers it. */
function grantRow(n: number): Grant {
  return {
    granted: true,
    reservation_id: `r${n}`,
    key_alias: "k1",
    env_var_name: "KEY_1",
    model: GEMMA,
    waited_ms: 0,
    reason: null,
    retry_after_ms: null,
    ticket: null,
    queue_position: null,
    expected_wait_ms: null,
  };
}

/** The key ring of a stub database whose pool is k1, held as KEY_1. */
function unitKeys(sql: Sql): KeyRing {
  return new KeyRing(sql, (name) => name === "KEY_1" ? "AIza-unit" : undefined);
}

Deno.test("the protocol: queued with a ticket, then as settle says, until it says stop", async () => {
  const answers = [
    new Response('{"error": {"code": 503}}', { status: 503 }),
    Response.json({ usageMetadata: { promptTokenCount: 3 } }),
  ];
  const google = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => answers.shift()!,
  );
  const acquired: unknown[][] = [];
  const settled: unknown[][] = [];
  const acquireAnswers = [
    {
      ...grantRow(0),
      granted: false,
      reason: "queued",
      retry_after_ms: 1,
      ticket: "t1",
    },
    grantRow(1),
    grantRow(2),
  ];
  const verdicts = [
    { action: "release_sent", retry: true, retry_after_ms: 1 },
    { action: "commit", retry: false, retry_after_ms: null },
  ];
  const sql = stubSql((text, values) => {
    if (text.includes("public.pool_keys()")) {
      return [{ key_alias: "k1", env_var_name: "KEY_1" }];
    }
    if (text.includes("public.acquire(")) {
      acquired.push(values);
      return [acquireAnswers.shift()];
    }
    settled.push(values);
    return [verdicts.shift()];
  });
  const call: Call = {
    caller: "unit",
    model: GEMMA,
    version: "v1beta",
    stream: false,
    body: { contents: [{ parts: [{ text: "hi" }] }] },
    estimate: 7,
    mode: "WAIT",
    deadline: performance.now() + 5000,
    requestId: "req-1",
    endUser: null,
    signal: new AbortController().signal,
  };
  const logged: unknown[] = [];
  const [last, sent] = await carry({
    sql,
    keys: unitKeys(sql),
    googleBaseUrl: `http://127.0.0.1:${google.addr.port}`,
    timeoutMs: 5000,
    maxAttempts: 3,
    log: (line) => logged.push(line),
  }, call);
  await google.shutdown();

  // The queued answer's ticket went back with the next acquire (the last argument but the
  // end user, none here).
  deepStrictEqual(acquired.map((v) => v.slice(-2)), [
    [null, null],
    ["t1", null],
    [null, null],
  ]);
  // Google's status and JSON body went to settle as received, then it said stop.
  deepStrictEqual(settled.map((v) => v.slice(0, 4)), [
    ["r1", 503, '{"error":{"code":503}}', null],
    ["r2", 200, '{"usageMetadata":{"promptTokenCount":3}}', null],
  ]);
  equal(last.reservation_id, "r2");
  ok("status" in sent && sent.status === 200);
  equal(JSON.stringify(logged).includes("AIza-unit"), false);
});

const TOKEN = "llmk_unit";
const STREAMED = [
  { candidates: [{ content: { parts: [{ text: "При" }] } }] },
  {
    candidates: [{
      content: { parts: [{ text: "вет" }] },
      finishReason: "STOP",
    }],
    usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 2 },
  },
].map((e) => `data: ${JSON.stringify(e)}\r\n\r\n`).join("");

function queued(position: number): Partial<Grant> {
  return {
    granted: false,
    reason: "queued",
    retry_after_ms: 20,
    ticket: "t1",
    queue_position: position,
    expected_wait_ms: 40 * position,
  };
}

function waitTimeout(retryAfterMs: number): Partial<Grant> {
  return {
    granted: false,
    reason: "wait_timeout",
    retry_after_ms: retryAfterMs,
  };
}

/**
 * The handler over a stub database whose acquire answers `acquires` in turn
 * (a grant once they run out) and a stub Google whose countTokens takes
 * `countMs`; `generated` counts the calls that reached Google, `settled` the
 * statuses settle heard, `acquireValues` each acquire's bound values.
 */
async function gatewayOver(acquires: Partial<Grant>[], countMs = 0) {
  const stats = {
    generated: 0,
    acquired: 0,
    settled: [] as unknown[],
    acquireValues: [] as unknown[][],
  };
  const google = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    async (req) => {
      const path = new URL(req.url).pathname;
      if (path.endsWith(":countTokens")) {
        await new Promise((done) => setTimeout(done, countMs));
        return Response.json({ totalTokens: 5 });
      }
      stats.generated++;
      if (path.endsWith(":streamGenerateContent")) {
        return new Response(STREAMED, {
          headers: { "content-type": "text/event-stream" },
        });
      }
      return Response.json({ candidates: [] });
    },
  );
  const digest = toHex(await sha256(TOKEN));
  const sql = stubSql((text, values) => {
    if (text.includes("public.identify_caller(")) {
      return [{
        caller: "unit",
        stored_sha256: digest,
        resolved_model: GEMMA,
        model_allowed: true,
      }];
    }
    if (text.includes("public.pool_keys()")) {
      return [{ key_alias: "k1", env_var_name: "KEY_1" }];
    }
    if (text.includes("public.acquire(")) {
      stats.acquired++;
      stats.acquireValues.push(values);
      return [{ ...grantRow(stats.acquired), ...acquires.shift() }];
    }
    stats.settled.push(values[1]);
    return [{ action: "commit", retry: false, retry_after_ms: null }];
  });
  const handle = createHandler({
    sql,
    keys: unitKeys(sql),
    googleBaseUrl: `http://127.0.0.1:${google.addr.port}`,
    maxBodyBytes: 4096,
    timeoutMs: 5000,
    maxAttempts: 1,
    defaultMaxWaitMs: 5000,
    log: () => {},
  });
  const ask = (method: string, headers: Record<string, string> = {}) =>
    handle(
      new Request(`http://gw/v1beta/models/${GEMMA}:${method}`, {
        method: "POST",
        headers: { "x-goog-api-key": TOKEN, ...headers },
        body: JSON.stringify({ contents: [{ parts: [{ text: "hi" }] }] }),
      }),
    );
  return { ask, stats, stop: () => google.shutdown() };
}

Deno.test("the wait in line: the first place and the time taken, as headers of the answer", async () => {
  const gw = await gatewayOver([queued(3), queued(1)]);
  const waited = await gw.ask("generateContent");
  const atOnce = await gw.ask("generateContent");
  const streamed = await gw.ask("streamGenerateContent", {}); // no progress asked: no comment
  await Promise.all([waited.text(), atOnce.text()]);
  const text = await streamed.text();
  await gw.stop();

  equal(waited.status, 200);
  equal(waited.headers.get(QUEUE_POSITION_HEADER), "3");
  ok(Number(waited.headers.get(WAITED_HEADER)) >= 40); // two sleeps of 20 ms in line
  equal(waited.headers.get(MODEL_HEADER), GEMMA);
  equal(atOnce.headers.get(QUEUE_POSITION_HEADER), "0"); // never told to wait
  ok(Number(atOnce.headers.get(WAITED_HEADER)) < 1000);
  equal(text, STREAMED);
  equal(streamed.headers.get(QUEUE_POSITION_HEADER), "0");
});

Deno.test("the wait asked for is the whole call's: a slow count is waited out of it", async () => {
  const gw = await gatewayOver([waitTimeout(1000)], 300);
  const refused = await gw.ask("generateContent", {
    "x-llm-limits-max-wait": "0.2",
  });
  await refused.text();
  await gw.stop();

  equal(refused.status, 429);
  // The 0.2 s were gone when the count came back: acquire was asked for no wait.
  equal(gw.stats.acquired, 1);
  equal(gw.stats.acquireValues[0][3], 0); // max_wait_ms (db.ts: the fourth value)
});

Deno.test("the wait in line: a refusal after a wait says where it stood too", async () => {
  const gw = await gatewayOver([queued(2), waitTimeout(1500)]);
  const answer = await gw.ask("generateContent");
  const body = await answer.json();
  await gw.stop();

  equal(answer.status, 429);
  equal(body.error.status, "RESOURCE_EXHAUSTED");
  equal(answer.headers.get(QUEUE_POSITION_HEADER), "2");
  ok(Number(answer.headers.get(WAITED_HEADER)) >= 20);
  equal(answer.headers.get("retry-after"), "2");
  equal(gw.stats.generated, 0);
});

Deno.test("a watched stream: each queued answer as a comment, then the headers, then Google's stream", async () => {
  const gw = await gatewayOver([queued(2), queued(1)]);
  const answer = await gw.ask("streamGenerateContent", {
    [PROGRESS_HEADER]: "comments",
  });
  const text = await answer.text();
  await gw.stop();

  equal(answer.status, 200);
  equal(answer.headers.get("content-type"), "text/event-stream");
  equal(answer.headers.get(QUEUE_POSITION_HEADER), "2");
  const waited = /: x-llm-limits-waited-ms: (\d+)\n\n/.exec(text);
  ok(waited && Number(waited[1]) >= 40, text);
  equal(
    text,
    `: llm-limits queued position=2 expected_wait_ms=80 model=${GEMMA}\n\n` +
      `: llm-limits queued position=1 expected_wait_ms=40 model=${GEMMA}\n\n` +
      `: ${MODEL_HEADER}: ${GEMMA}\n\n` +
      `: ${QUEUE_POSITION_HEADER}: 2\n\n` +
      `: ${WAITED_HEADER}: ${waited![1]}\n\n` +
      STREAMED,
  );
  deepStrictEqual(gw.stats.settled, [200]); // settled when Google's stream ended
});

Deno.test("a watched stream: a refusal after the comments is one error event; no wait, no early answer", async () => {
  const gw = await gatewayOver([queued(1), waitTimeout(900)]);
  const late = await gw.ask("streamGenerateContent", {
    [PROGRESS_HEADER]: "comments",
  });
  const lateText = await late.text();
  const atOnce = await gw.ask("streamGenerateContent", {
    [PROGRESS_HEADER]: "Comments",
  });
  const atOnceText = await atOnce.text();
  await gw.stop();

  equal(late.status, 200); // the stream had begun: the refusal is in it
  const events = lateText.split("\n\n").filter((e) => e.startsWith("data: "));
  equal(events.length, 1);
  const error = JSON.parse(events[0].slice(6)).error;
  deepStrictEqual([error.code, error.status], [429, "RESOURCE_EXHAUSTED"]);
  ok(error.message.includes("Please retry in 0.9s"));
  ok(lateText.startsWith(": llm-limits queued position=1 "));
  // Granted at the first acquire: the ordinary answer, Google's stream as it came.
  equal(atOnce.headers.get(QUEUE_POSITION_HEADER), "0");
  equal(atOnceText, STREAMED);
  equal(gw.stats.generated, 1);
});

Deno.test("a watched stream: the caller hanging up while in line ends the wait; Google is not called", async () => {
  const gw = await gatewayOver(Array.from({ length: 500 }, () => queued(1)));
  const answer = await gw.ask("streamGenerateContent", {
    [PROGRESS_HEADER]: "comments",
  });
  const reader = answer.body!.getReader();
  await reader.read(); // the first comment
  await reader.cancel();
  const acquiredThen = gw.stats.acquired;
  await new Promise((resolve) => setTimeout(resolve, 200));
  await gw.stop();

  ok(gw.stats.acquired <= acquiredThen + 1, `${gw.stats.acquired} acquires`);
  equal(gw.stats.generated, 0);
});

Deno.test("progress header: comments or none; anything else is a 400", () => {
  equal(progressOf(new Headers()), false);
  equal(progressOf(new Headers({ [PROGRESS_HEADER]: "none" })), false);
  equal(progressOf(new Headers({ [PROGRESS_HEADER]: " Comments " })), true);
  throws(
    () => progressOf(new Headers({ [PROGRESS_HEADER]: "events" })),
    (e: unknown) => e instanceof GatewayError && e.code === 400,
  );
});

function unitCall(mode: "WAIT" | "NO_WAIT", waitMs: number): Call {
  return {
    caller: "unit",
    model: GEMMA,
    version: "v1beta",
    stream: false,
    body: { contents: [{ parts: [{ text: "hi" }] }] },
    estimate: 7,
    mode,
    deadline: performance.now() + waitMs,
    requestId: "req-1",
    endUser: null,
    signal: new AbortController().signal,
  };
}

/** The carrier of the protocol tests: key KEY_1 held, Google at `port`. */
function unitCarrier(
  sql: Sql,
  port: number,
  maxAttempts: number,
  logged: unknown[],
): Carrier {
  return {
    sql,
    keys: unitKeys(sql),
    googleBaseUrl: `http://127.0.0.1:${port}`,
    timeoutMs: 5000,
    maxAttempts,
    log: (line) => logged.push(line),
  };
}

function lost(code: string): Error {
  return Object.assign(new Error(`lost: ${code}`), { code });
}

Deno.test("a lost database is ridden out: acquire keeps its ticket, settle is not lost", async () => {
  const google = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => Response.json({ usageMetadata: { promptTokenCount: 3 } }),
  );
  const grant = grantRow(1);
  const queued = { ...grant, granted: false, reason: "queued", ticket: "t1" };
  const acquireAnswers = [
    lost("57P01"),
    lost("ECONNREFUSED"),
    { ...queued, retry_after_ms: 1 },
    lost("57P03"),
    grant,
  ];
  const settleAnswers = [
    lost("CONNECTION_CLOSED"),
    { action: "commit", retry: false, retry_after_ms: null },
  ];
  const acquired: unknown[] = [];
  let settles = 0;
  const sql = stubSql((text, values) => {
    if (text.includes("public.pool_keys()")) {
      return [{ key_alias: "k1", env_var_name: "KEY_1" }];
    }
    const next = text.includes("public.acquire(")
      ? (acquired.push(values.at(-2)), acquireAnswers.shift()) // the ticket
      : (settles++, settleAnswers.shift());
    if (next instanceof Error) throw next;
    return [next];
  });
  const logged: { event?: string }[] = [];
  const [last, sent] = await carry(
    unitCarrier(sql, google.addr.port, 1, logged),
    unitCall("WAIT", 5000),
  );
  await google.shutdown();

  // Each lost acquire went again with the ticket it held: none at first, then t1.
  deepStrictEqual(acquired, [null, null, null, "t1", "t1"]);
  equal(settles, 2);
  equal(last.reservation_id, "r1");
  ok("status" in sent && sent.status === 200);
  deepStrictEqual(logged.map((l) => l.event), ["attempt"]);
  equal(logged.some((l) => JSON.stringify(l).includes('"commit"')), true);
});

Deno.test("a database still lost at the deadline is an error; a NO_WAIT rides out 2 s", async () => {
  let tries = 0;
  const sql = stubSql((text) => {
    if (text.includes("public.pool_keys()")) {
      return [{ key_alias: "k1", env_var_name: "KEY_1" }];
    }
    tries++;
    throw lost("ECONNREFUSED");
  });
  const began = performance.now();
  const error = await carry(unitCarrier(sql, 9, 1, []), unitCall("NO_WAIT", 0))
    .catch((e) => e);
  equal((error as { code?: string }).code, "ECONNREFUSED");
  ok(tries > 3, `tried ${tries} times`);
  ok(performance.now() - began >= RIDE_OUT_MS, "gave up before RIDE_OUT_MS");
});
