/**
 * The llm-gateway: the Gemini REST API in front of the quota pool.
 *
 * A caller presents its own token (never a Google key). Each request is
 * authenticated, parsed, shaped for its model (gemma.ts) and counted
 * (tokens.ts); generateContent and streamGenerateContent are then carried
 * through the call protocol (protocol.ts: acquire, send, settle, as told).
 * Google's answer goes back unchanged, with `x-llm-limits-model` naming the
 * model that answered and the wait in line in `x-llm-limits-queue-position`
 * and `x-llm-limits-waited-ms` (queue.ts); the gateway's own refusals are
 * Google-shaped errors. A stream sent with `x-llm-limits-progress: comments`
 * is answered at its first `queued`, and hears each one as an SSE comment.
 * `x-llm-limits-end-user` names the person a call is for (END_USER_HEADER).
 *
 * Logging: one JSON line per attempt and per refusal, with the caller's name,
 * aliases and reservation ids; never a key value or a caller token.
 */

import * as db from "./db.ts";
import { constantTimeEqual, sha256, toHex, tokenOf } from "./callers.ts";
import { GatewayError, type Json } from "./errors.ts";
import { field, shapeRequest } from "./gemma.ts";
import { type Call, type Carrier, carry } from "./protocol.ts";
import { QUEUE_POSITION_HEADER, queuedComment, WaitInLine } from "./queue.ts";
import { EarlyStream } from "./sse.ts";
import { countTokens } from "./tokens.ts";
import type { Sent } from "./upstream.ts";

export interface Config extends Carrier {
  maxBodyBytes: number;
  defaultMaxWaitMs: number;
}

export type Method =
  | "generateContent"
  | "streamGenerateContent"
  | "countTokens";

/** A request, checked: route, caller token and JSON body. */
interface Parsed {
  version: string;
  model: string;
  method: Method;
  token: string;
  body: Json;
}

// Locally the path starts at /v1beta; deployed it starts with the function's name.
const ROUTE =
  /^(?:\/[^]*?)?\/(v1beta|v1)\/(?:models\/)+([^/:]+):(generateContent|streamGenerateContent|countTokens)$/;

export const MODEL_HEADER = "x-llm-limits-model";
export const PROGRESS_HEADER = "x-llm-limits-progress";
/**
 * The person a call is for (a bot's user, e.g. `tg:123456`): passed to
 * acquire as it came, whose per-person limits and turns apply. The database
 * judges it: an empty or over-long value is its LL007, answered 400.
 */
export const END_USER_HEADER = "x-llm-limits-end-user";

export function createHandler(
  cfg: Config,
): (req: Request) => Promise<Response> {
  return async function handle(req: Request): Promise<Response> {
    // The wait asked for is the whole call's: parsing, the caller's check and the
    // count before the first acquire are waited out of it, not added to it.
    const started = performance.now();
    try {
      const parsed = await parseRequest(req, cfg.maxBodyBytes);
      const caller = await authenticate(cfg, parsed);
      const body = shapeRequest(parsed.model, parsed.body);
      if (parsed.method === "countTokens") {
        return await forwardCount(cfg, parsed, body);
      }
      const { mode, maxWaitMs } = waitOf(req.headers, cfg.defaultMaxWaitMs);
      const stream = parsed.method === "streamGenerateContent";
      const watched = progressOf(req.headers) && stream;
      const leaving = new AbortController(); // an early stream's caller hung up
      const line = new WaitInLine();
      const call: Call = {
        caller,
        model: parsed.model,
        version: parsed.version,
        stream,
        body,
        estimate: await countTokens(cfg, parsed.version, parsed.model, body),
        mode,
        deadline: started + (mode === "WAIT" ? maxWaitMs : 0),
        requestId: requestIdOf(req.headers),
        endUser: req.headers.get(END_USER_HEADER),
        signal: AbortSignal.any([req.signal, leaving.signal]),
        waits: line,
      };
      if (watched) {
        return await answerWatched(cfg, call, line, leaving);
      }
      return await answer(cfg, call, line);
    } catch (err) {
      return errorResponse(err, cfg); // refused before any acquire
    }
  };
}

/** The call carried, and its answer (Google's, or the gateway's error) with the wait told. */
async function answer(
  cfg: Config,
  call: Call,
  line: WaitInLine,
): Promise<Response> {
  try {
    const [grant, sent] = await carry(cfg, call);
    return line.stamp(respond(grant.model, sent));
  } catch (err) {
    return line.stamp(errorResponse(err, cfg));
  }
}

/**
 * A stream whose caller watches its wait. Until it is told `queued` it is
 * answered like any other; then at once (200, text/event-stream), with each
 * `queued` as a comment, and at the end the answer's x-llm-limits-* headers as
 * comments before the answer itself (sse.ts EarlyStream).
 */
function answerWatched(
  cfg: Config,
  call: Call,
  line: WaitInLine,
  leaving: AbortController,
): Promise<Response> {
  return new Promise((resolve) => {
    let early: EarlyStream | null = null;
    line.onQueued = (grant) => {
      if (early === null) {
        early = new EarlyStream(leaving);
        resolve(
          new Response(early.body, {
            headers: {
              "content-type": "text/event-stream",
              [QUEUE_POSITION_HEADER]: String(line.firstPosition),
            },
          }),
        );
      }
      early.comment(queuedComment(grant));
    };
    answer(cfg, call, line).then((res) => {
      if (early === null) return resolve(res);
      for (const [name, value] of res.headers) {
        if (name.startsWith("x-llm-limits-")) {
          early.comment(`${name}: ${value}`);
        }
      }
      return early.end(res);
    });
  });
}

/** Route, method, token and a JSON object body, or a Google-shaped 4xx; reads nothing else. */
export async function parseRequest(
  req: Request,
  maxBodyBytes: number,
): Promise<Parsed> {
  const url = new URL(req.url);
  const route = ROUTE.exec(decodeURIComponent(url.pathname));
  if (route === null) {
    throw new GatewayError(
      404,
      `The requested URL ${url.pathname} was not found.`,
    );
  }
  if (req.method !== "POST") {
    throw new GatewayError(405, `${req.method} is not allowed; use POST`);
  }
  const [, version, model, method] = route as unknown as [
    string,
    string,
    string,
    Method,
  ];
  const token = tokenOf(req.headers);
  if (!token) {
    throw new GatewayError(
      401,
      "Missing caller token: send it as x-goog-api-key or Authorization: Bearer.",
    );
  }
  const body = parseJson(await readBody(req, maxBodyBytes));
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new GatewayError(
      400,
      "Invalid JSON payload received: the body must be a JSON object.",
    );
  }
  const contents = field(body, "contents");
  if (contents == null || (Array.isArray(contents) && contents.length === 0)) {
    // Google refuses it too; said here, nothing is counted or spent.
    throw new GatewayError(
      400,
      "* GenerateContentRequest.contents: contents is not specified",
    );
  }
  return { version, model, method, token, body: body as Json };
}

/** The caller's name, if its token is active and may use the model; else a 401/403/404. */
async function authenticate(cfg: Config, parsed: Parsed): Promise<string> {
  const digest = await sha256(parsed.token);
  const found = await db.identifyCaller(cfg.sql, toHex(digest), parsed.model);
  if (
    found === null || !constantTimeEqual(fromHex(found.stored_sha256), digest)
  ) {
    throw new GatewayError(401, "Caller token not valid (unknown or revoked).");
  }
  if (found.resolved_model === null) {
    throw new GatewayError(
      404,
      `models/${parsed.model} is not found in the quota pool's limits.`,
    );
  }
  if (!found.model_allowed) {
    throw new GatewayError(
      403,
      `caller ${found.caller} may not use ${parsed.model}.`,
    );
  }
  return found.caller;
}

/** countTokens spends no generateContent quota: it goes straight through with a held key. */
async function forwardCount(
  cfg: Config,
  parsed: Parsed,
  body: Json,
): Promise<Response> {
  const key = await cfg.keys.any();
  if (!key) {
    throw new GatewayError(
      503,
      `the gateway holds no usable key for ${parsed.model}`,
    );
  }
  const base = cfg.googleBaseUrl.replace(/\/+$/, "");
  const model = encodeURIComponent(parsed.model);
  const upstream = await fetch(
    `${base}/${parsed.version}/models/${model}:countTokens`,
    {
      method: "POST",
      headers: { "content-type": "application/json", "x-goog-api-key": key },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(cfg.timeoutMs),
    },
  );
  const type = upstream.headers.get("content-type");
  const text = await upstream.text();
  return respond(parsed.model, {
    status: upstream.status,
    type,
    text,
    json: null,
  });
}

/** Google's answer as it came, naming the model that answered; a failed exchange, Google-shaped. */
export function respond(model: string, sent: Sent): Response {
  if ("wire" in sent) {
    const [code, message] = sent.wire === "timeout"
      ? [504, "the Gemini API did not answer in time"]
      : sent.wire === "cancelled"
      ? [499, "the caller went away"]
      : sent.wire === "not_sent"
      ? [503, "the granted key is not held by the gateway"]
      : [503, "the Gemini API could not be reached, or its answer broke off"];
    return new GatewayError(code, message).response();
  }
  const headers = new Headers({ [MODEL_HEADER]: model });
  if (sent.type) headers.set("content-type", sent.type);
  const body = "stream" in sent ? sent.stream : sent.text;
  return new Response(body, { status: sent.status, headers });
}

function errorResponse(err: unknown, cfg: Config): Response {
  if (err instanceof GatewayError) {
    if (err.code >= 500) {
      cfg.log({ event: "error", code: err.code, message: err.message });
    }
    return err.response();
  }
  const message = describe(err);
  if (db.isRefusedInput(err)) return new GatewayError(400, message).response();
  if (db.isConnectionLost(err)) {
    cfg.log({ event: "error", code: 503, message });
    return new GatewayError(
      503,
      "the quota database is unreachable; retry shortly",
    ).response();
  }
  cfg.log({ event: "error", code: 500, message });
  return new GatewayError(500, "internal error in llm-gateway").response();
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return code ? `${code}: ${err.message}` : `${err.name}: ${err.message}`;
  }
  return String(err);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function fromHex(hex: string): Uint8Array {
  return new Uint8Array((hex.match(/../g) ?? []).map((h) => parseInt(h, 16)));
}

/** Read at most `limit` bytes of the body; more is a 413 before anything else is spent. */
export async function readBody(req: Request, limit: number): Promise<string> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  const tooLarge = () =>
    new GatewayError(
      413,
      `Request payload size exceeds the limit: ${limit} bytes.`,
    );
  if (declared > limit) throw tooLarge();
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new TextDecoder().decode(all);
}

/** WAIT (default) or NO_WAIT, and how long a WAIT may last, from the caller's headers. */
export function waitOf(
  headers: Headers,
  defaultMs: number,
): { mode: "WAIT" | "NO_WAIT"; maxWaitMs: number } {
  const mode = (headers.get("x-llm-limits-mode") ?? "WAIT").trim()
    .toUpperCase();
  if (mode !== "WAIT" && mode !== "NO_WAIT") {
    throw new GatewayError(400, "x-llm-limits-mode must be WAIT or NO_WAIT");
  }
  const given = headers.get("x-llm-limits-max-wait");
  let maxWaitMs = defaultMs;
  if (given !== null) {
    const seconds = Number(given.trim().replace(/s$/, ""));
    if (
      !given.trim() || !Number.isFinite(seconds) || seconds < 0 ||
      seconds > 3600
    ) {
      throw new GatewayError(
        400,
        "x-llm-limits-max-wait must be seconds between 0 and 3600",
      );
    }
    maxWaitMs = Math.round(seconds * 1000);
  }
  return { mode, maxWaitMs };
}

/** Whether a stream's caller asked to watch its wait as SSE comments (`comments`). */
export function progressOf(headers: Headers): boolean {
  const given = headers.get(PROGRESS_HEADER)?.trim().toLowerCase();
  if (given === undefined || given === "" || given === "none") return false;
  if (given === "comments") return true;
  throw new GatewayError(
    400,
    `${PROGRESS_HEADER} must be comments or none`,
  );
}

function requestIdOf(headers: Headers): string {
  const given = headers.get("x-llm-limits-request-id")?.trim();
  if (given && given.length <= 200) return given;
  return crypto.randomUUID().replaceAll("-", "");
}
