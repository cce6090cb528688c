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
  respond,
  waitOf,
} from "../llm-gateway/gateway.ts";
import { KeyRing } from "../llm-gateway/keys.ts";
import { type Call, type Carrier, carry } from "../llm-gateway/protocol.ts";
import { SseWatcher } from "../llm-gateway/sse.ts";
import { byteBound } from "../llm-gateway/tokens.ts";
import { wireError } from "../llm-gateway/upstream.ts";
import { RIDE_OUT_MS, type Sql } from "../llm-gateway/db.ts";

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
    Object.assign(
      new Promise((resolve) => resolve(answer(strings.join("$"), values))),
      { cancel() {} },
    );
  return Object.assign(sql, { array: (a: unknown[]) => a }) as unknown as Sql;
}

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
    signal: new AbortController().signal,
  };
}

/** Grant `n` of the protocol tests, on key k1. */
function unitGrant(n: number) {
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
    keys: new KeyRing(
      sql,
      (name) => name === "KEY_1" ? "AIza-unit" : undefined,
    ),
    googleBaseUrl: `http://127.0.0.1:${port}`,
    timeoutMs: 5000,
    maxAttempts,
    log: (line) => logged.push(line),
  };
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
      ...unitGrant(0),
      granted: false,
      reason: "queued",
      retry_after_ms: 1,
      ticket: "t1",
    },
    unitGrant(1),
    unitGrant(2),
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
  const logged: unknown[] = [];
  const [last, sent] = await carry(
    unitCarrier(sql, google.addr.port, 3, logged),
    unitCall("WAIT", 5000),
  );
  await google.shutdown();

  // The queued answer's ticket went back with the next acquire (the last argument).
  deepStrictEqual(acquired.map((v) => v.at(-1)), [null, "t1", null]);
  // Google's status and JSON body went to settle as received, then it said stop.
  deepStrictEqual(settled.map((v) => v.slice(0, 4)), [
    ["r1", 503, '{"error":{"code":503}}', null],
    ["r2", 200, '{"usageMetadata":{"promptTokenCount":3}}', null],
  ]);
  equal(last.reservation_id, "r2");
  ok("status" in sent && sent.status === 200);
  equal(JSON.stringify(logged).includes("AIza-unit"), false);
});

/** A postgres.js error of a lost connection (server shutdown, refused, closed). */
function lost(code: string): Error {
  return Object.assign(new Error(`lost: ${code}`), { code });
}

Deno.test("a lost database is ridden out: acquire keeps its ticket, settle is not lost", async () => {
  const google = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => Response.json({ usageMetadata: { promptTokenCount: 3 } }),
  );
  const grant = unitGrant(1);
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
      ? (acquired.push(values.at(-1)), acquireAnswers.shift())
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
