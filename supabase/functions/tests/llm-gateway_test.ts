// Unit tests of the llm-gateway's pure parts: request shaping, Google's error bodies, the SSE
// watcher, tokens, and the refusals the handler makes before it touches the database.
// The end-to-end behaviour (Postgres, the SDK, the fake Gemini) is tests/gateway in pytest.

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
  isTransient,
  keyRejection,
  quotaOf,
  usageOf,
} from "../llm-gateway/google.ts";
import { createHandler, upstreamUrl, waitOf } from "../llm-gateway/gateway.ts";
import { SseWatcher } from "../llm-gateway/sse.ts";
import { byteBound, KeyRing } from "../llm-gateway/tokens.ts";
import type { Sql } from "../llm-gateway/db.ts";

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

Deno.test("a 429: quotaId (per-day wins) and retryDelay, or the message's retry-in", () => {
  const body = {
    error: {
      code: 429,
      message: "You exceeded your current quota. Please retry in 21.5s.",
      details: [
        { "@type": "type.googleapis.com/google.rpc.Help", links: [] },
        {
          "@type": "type.googleapis.com/google.rpc.QuotaFailure",
          violations: [
            { quotaId: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier" },
            { quotaId: "GenerateRequestsPerDayPerProjectPerModel-FreeTier" },
          ],
        },
        {
          "@type": "type.googleapis.com/google.rpc.RetryInfo",
          retryDelay: "45.83s",
        },
      ],
    },
  };
  deepStrictEqual(quotaOf(body), {
    quotaId: "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    retryDelayMs: 45830,
  });
  deepStrictEqual(quotaOf({ error: { message: "Please retry in 250ms." } }), {
    quotaId: null,
    retryDelayMs: 250,
  });
  deepStrictEqual(quotaOf({ error: { code: 429 } }), {
    quotaId: null,
    retryDelayMs: null,
  });
  deepStrictEqual(quotaOf("not json"), { quotaId: null, retryDelayMs: null });
});

Deno.test("key rejections, transient statuses", () => {
  const invalid = {
    error: {
      message: "API key not valid. Please pass a valid API key.",
      details: [{
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        reason: "API_KEY_INVALID",
      }],
    },
  };
  equal(keyRejection(400, invalid), "API_KEY_INVALID");
  equal(
    keyRejection(403, {
      error: { message: "Your API key was reported as leaked." },
    }),
    "API_KEY_LEAKED",
  );
  equal(
    keyRejection(400, {
      error: { message: "Developer instruction is not enabled" },
    }),
    null,
  );
  deepStrictEqual([500, 503, 504, 408, 429, 400].map(isTransient), [
    true,
    true,
    true,
    true,
    false,
    false,
  ]);
});

Deno.test("usage: prompt, candidates plus thoughts", () => {
  deepStrictEqual(
    usageOf({
      usageMetadata: {
        promptTokenCount: 12,
        candidatesTokenCount: 5,
        thoughtsTokenCount: 7,
      },
    }),
    { promptTokens: 12, completionTokens: 12, thoughtsTokens: 7 },
  );
  equal(usageOf({ candidates: [] }), null);
});

Deno.test("SSE: events split across chunks; the last usage wins", () => {
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
  watcher.end();
  deepStrictEqual(usageOf(watcher.lastWithUsage), {
    promptTokens: 9,
    completionTokens: 4,
    thoughtsTokens: null,
  });
  equal(
    (watcher.last?.candidates as { finishReason?: string }[])[0].finishReason,
    "STOP",
  );
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

Deno.test("upstream URLs and the byte bound", () => {
  equal(
    upstreamUrl("http://fake:1/", "v1beta", GEMMA, "streamGenerateContent"),
    `http://fake:1/v1beta/models/${GEMMA}:streamGenerateContent?alt=sse`,
  );
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
    backoffMs: 0,
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
