/**
 * The llm-gateway: the Gemini REST API in front of the quota pool.
 *
 * A caller presents its own token (never a Google key). Each generateContent or
 * streamGenerateContent call is counted, acquired, sent with the granted key and settled
 * exactly as the Python client settles it (`client.py`): at most `maxAttempts` attempts, each
 * acquiring again; commit_usage on success, report_rate_limit on a 429, release (sent) on any
 * other answer or a lost connection, disable_key when Google refuses the key itself. Google's
 * answer goes back unchanged; the gateway's own refusals are Google-shaped errors.
 *
 * Logging: one JSON line per attempt and per refusal, with the caller's name, aliases and
 * reservation ids; never a key value or a caller token.
 */

import * as db from "./db.ts";
import { constantTimeEqual, sha256, toHex, tokenOf } from "./callers.ts";
import { GatewayError, type Json, refusal } from "./errors.ts";
import { shapeRequest } from "./gemma.ts";
import {
  isTransient,
  keyRejection,
  metaOf,
  quotaOf,
  usageOf,
} from "./google.ts";
import { SseWatcher } from "./sse.ts";
import { countTokens, type KeyRing, UpstreamRefusal } from "./tokens.ts";

export interface Config {
  sql: db.Sql;
  keys: KeyRing;
  googleBaseUrl: string;
  maxBodyBytes: number;
  timeoutMs: number;
  backoffMs: number;
  maxAttempts: number;
  defaultMaxWaitMs: number;
  log: (line: Json) => void;
}

export type Method =
  | "generateContent"
  | "streamGenerateContent"
  | "countTokens";

// Locally the path starts at /v1beta; deployed it starts with the function's name.
const ROUTE =
  /^(?:\/[^]*?)?\/(v1beta|v1)\/(?:models\/)+([^/:]+):(generateContent|streamGenerateContent|countTokens)$/;
const WAIT_CAP_TTL_MS = 60_000;

interface Call {
  caller: string;
  model: string; // as the request names it
  version: string;
  stream: boolean;
  body: Json;
  estimate: number;
  mode: "WAIT" | "NO_WAIT";
  deadline: number; // performance.now() milliseconds
  requestId: string;
  signal: AbortSignal;
}

export function createHandler(
  cfg: Config,
): (req: Request) => Promise<Response> {
  let waitCap: { value: number; until: number } | null = null;

  async function maxWaitCap(): Promise<number> {
    if (waitCap === null || performance.now() > waitCap.until) {
      waitCap = {
        value: await db.maxWaitCapMs(cfg.sql),
        until: performance.now() + WAIT_CAP_TTL_MS,
      };
    }
    return waitCap.value;
  }

  /**
   * The WAIT rule, in one place: ask the database for a grant with at most the wait it
   * allows per statement (`max_wait_cap_ms`), and ask again after a capped wait while the
   * caller's own deadline lasts. Adopting a different waiting protocol changes only this.
   */
  async function acquireWithin(
    call: Call,
    aliases: string[],
  ): Promise<db.Grant> {
    const cap = await maxWaitCap();
    let lostOnce = false;
    // A WAIT's place in line: the same ticket on every call until granted.
    const ticket = call.mode === "WAIT" ? crypto.randomUUID() : null;
    while (true) {
      const left = call.mode === "WAIT"
        ? Math.floor(call.deadline - performance.now())
        : 0;
      let grant: db.Grant;
      try {
        grant = await db.acquire(cfg.sql, {
          model: call.model,
          tokens: call.estimate,
          mode: call.mode,
          maxWaitMs: Math.max(0, Math.min(cap, left)),
          keyAliases: aliases,
          caller: call.caller,
          requestId: call.requestId,
          ticket,
        }, call.signal);
      } catch (err) {
        // A caller that left cancels its waiting statement; nothing was granted.
        if (call.signal.aborted) {
          throw new GatewayError(499, "the caller went away");
        }
        if (!db.isConnectionLost(err) || lostOnce) throw err;
        lostOnce = true; // once more on a fresh connection, with the wait that is left
        continue;
      }
      if (grant.granted || call.signal.aborted) return grant;
      if (
        grant.reason === "queued" && call.mode === "WAIT" &&
        call.deadline - performance.now() > 1
      ) {
        // Not our turn yet: sleep here, holding no database connection, then call again.
        const pause = Math.min(
          grant.retry_after_ms ?? 0,
          call.deadline - performance.now(),
        );
        if (pause > 0) await sleep(pause);
        continue;
      }
      if (
        grant.reason === "wait_timeout" && call.deadline - performance.now() > 1
      ) continue;
      return grant;
    }
  }

  /** A settling RPC: retried through a lost connection, logged, never raised. */
  async function settle(
    name: string,
    run: () => Promise<unknown>,
  ): Promise<void> {
    for (const pause of [0, 250, 500, 1000, 2000]) {
      if (pause) await sleep(pause);
      try {
        await run();
        return;
      } catch (err) {
        if (!db.isConnectionLost(err)) {
          cfg.log({ event: "settle_failed", rpc: name, error: describe(err) });
          return;
        }
      }
    }
    cfg.log({
      event: "settle_failed",
      rpc: name,
      error: "database unreachable",
    });
  }

  function logAttempt(
    call: Call,
    attempt: number,
    outcome: string,
    grant: db.Grant | null,
    extra: Json = {},
  ) {
    cfg.log({
      event: "attempt",
      caller: call.caller,
      model: call.model,
      request_id: call.requestId,
      attempt,
      outcome,
      reservation_id: grant?.reservation_id ?? null,
      key_alias: grant?.key_alias ?? null,
      waited_ms: grant?.waited_ms ?? null,
      estimated_tokens: call.estimate,
      ...extra,
    });
  }

  async function commit(
    call: Call,
    grant: db.Grant,
    attempt: number,
    answer: unknown,
  ): Promise<void> {
    const usage = usageOf(answer);
    const prompt = usage?.promptTokens ?? call.estimate; // no usage: the upper bound stays counted
    const completion = usage?.completionTokens ?? 0;
    const meta: Json = { ...metaOf(answer), attempt, via: "gateway" };
    if (usage?.thoughtsTokens != null) {
      meta.thoughts_tokens = usage.thoughtsTokens;
    }
    if (call.stream) meta.stream = true;
    await settle(
      "commit_usage",
      () =>
        db.commitUsage(
          cfg.sql,
          grant.reservation_id!,
          prompt,
          completion,
          meta,
        ),
    );
    logAttempt(call, attempt, "ok", grant, {
      actual_tokens: prompt,
      completion_tokens: completion,
    });
  }

  /** Pipe a streamed answer through, then commit with its last chunk's usage. */
  function streamThrough(
    call: Call,
    grant: db.Grant,
    attempt: number,
    upstream: Response,
    abort: AbortController,
  ) {
    const reader = upstream.body!.getReader();
    const watcher = new SseWatcher();
    let settled = false;
    const finish = async (how: "commit" | "release", reason = "") => {
      if (settled) return;
      settled = true;
      if (how === "commit") {
        watcher.end();
        const last = watcher.lastWithUsage ?? watcher.last;
        await commit(
          call,
          grant,
          attempt,
          last && { ...watcher.last, usageMetadata: last.usageMetadata },
        );
      } else {
        await settle(
          "release",
          () => db.release(cfg.sql, grant.reservation_id!, reason, true),
        );
        logAttempt(call, attempt, reason, grant);
      }
    };
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            // Settled before the stream ends, so the caller that saw the end sees the ledger.
            await finish("commit");
            controller.close();
            return;
          }
          watcher.push(value);
          controller.enqueue(value);
        } catch (err) {
          controller.error(err);
          await finish("release", `stream_broken:${errorName(err)}`);
        }
      },
      async cancel() {
        // The caller hung up mid-stream: the call reached Google, so it stays counted.
        abort.abort();
        await finish("release", "client_disconnected");
      },
    });
    return new Response(body, {
      status: upstream.status,
      headers: passHeaders(upstream),
    });
  }

  async function generate(call: Call): Promise<Response> {
    let last: Response | GatewayError | null = null;
    for (let attempt = 1; attempt <= cfg.maxAttempts; attempt++) {
      const aliases = await cfg.keys.held();
      if (aliases.length === 0) {
        throw new GatewayError(
          503,
          `the gateway holds no usable key for ${call.model}`,
        );
      }
      const grant = await acquireWithin(call, aliases);
      if (!grant.granted) {
        logAttempt(call, attempt, `refused:${grant.reason}`, grant, {
          retry_after_ms: grant.retry_after_ms,
        });
        if (grant.reason === "no_key") {
          throw new GatewayError(
            503,
            `no key the gateway holds is active for ${call.model}`,
          );
        }
        throw refusal(
          call.model,
          grant.reason ?? "refused",
          grant.retry_after_ms,
        );
      }
      const rid = grant.reservation_id!;
      const alias = grant.key_alias!;
      const key = cfg.keys.value(grant.env_var_name ?? "");
      if (!key) {
        await settle(
          "release",
          () => db.release(cfg.sql, rid, "key_not_held", false),
        );
        cfg.keys.forget();
        throw new GatewayError(
          503,
          `key ${alias} was granted but the gateway does not hold it`,
        );
      }
      if (call.signal.aborted) {
        // The caller left while it waited: nothing was sent, so the grant is refunded.
        await settle(
          "release",
          () => db.release(cfg.sql, rid, "client_disconnected", false),
        );
        logAttempt(call, attempt, "client_disconnected", grant);
        throw new GatewayError(499, "the caller went away");
      }
      const abort = new AbortController();
      const timer = setTimeout(
        () => abort.abort(new DOMException("timed out", "TimeoutError")),
        cfg.timeoutMs,
      );
      const onCallerGone = () => abort.abort();
      call.signal.addEventListener("abort", onCallerGone);
      let upstream: Response;
      try {
        upstream = await fetch(
          upstreamUrl(
            cfg.googleBaseUrl,
            call.version,
            grant.model,
            call.stream ? "streamGenerateContent" : "generateContent",
          ),
          {
            method: "POST",
            headers: {
              "content-type": "application/json",
              "x-goog-api-key": key,
            },
            body: JSON.stringify(call.body),
            signal: abort.signal,
          },
        );
      } catch (err) {
        clearTimeout(timer);
        call.signal.removeEventListener("abort", onCallerGone);
        await settle(
          "release",
          () => db.release(cfg.sql, rid, errorName(err), true),
        );
        if (call.signal.aborted) {
          logAttempt(call, attempt, "client_disconnected", grant);
          throw new GatewayError(499, "the caller went away");
        }
        logAttempt(call, attempt, `transient:${errorName(err)}`, grant);
        last = new GatewayError(
          errorName(err) === "TimeoutError" ? 504 : 503,
          "the Gemini API did not answer",
        );
        await backOff(attempt);
        continue;
      }
      if (upstream.ok && call.stream) {
        clearTimeout(timer); // a long stream is not a stuck request
        call.signal.removeEventListener("abort", onCallerGone);
        return streamThrough(call, grant, attempt, upstream, abort);
      }
      let text: string;
      try {
        text = await upstream.text();
      } catch (err) {
        await settle(
          "release",
          () => db.release(cfg.sql, rid, errorName(err), true),
        );
        logAttempt(call, attempt, `transient:${errorName(err)}`, grant);
        last = new GatewayError(503, "the Gemini API's answer broke off");
        await backOff(attempt);
        continue;
      } finally {
        clearTimeout(timer);
        call.signal.removeEventListener("abort", onCallerGone);
      }
      const parsed = parseJson(text);
      const answer = new Response(text, {
        status: upstream.status,
        headers: passHeaders(upstream),
      });
      if (upstream.ok) {
        await commit(call, grant, attempt, parsed);
        return answer;
      }
      if (upstream.status === 429) {
        const { quotaId, retryDelayMs } = quotaOf(parsed);
        await settle(
          "report_rate_limit",
          () => db.reportRateLimit(cfg.sql, rid, quotaId, retryDelayMs),
        );
        logAttempt(call, attempt, "rate_limited", grant, {
          quota_id: quotaId,
          retry_delay_ms: retryDelayMs,
        });
        last = answer;
        continue;
      }
      await settle(
        "release",
        () => db.release(cfg.sql, rid, `http ${upstream.status}`, true),
      );
      if (isTransient(upstream.status)) {
        logAttempt(call, attempt, `transient:http_${upstream.status}`, grant);
        last = answer;
        await backOff(attempt);
        continue;
      }
      const rejected = keyRejection(upstream.status, parsed);
      if (rejected !== null) {
        await settle(
          "disable_key",
          () => db.disableKey(cfg.sql, alias, rejected),
        );
        cfg.keys.forget();
      }
      logAttempt(call, attempt, rejected ?? `http_${upstream.status}`, grant);
      return answer;
    }
    if (last instanceof GatewayError) throw last;
    return last!;
  }

  async function backOff(attempt: number): Promise<void> {
    if (attempt < cfg.maxAttempts && cfg.backoffMs > 0) {
      await sleep(
        cfg.backoffMs * 2 ** (attempt - 1) * (0.5 + Math.random() / 2),
      );
    }
  }

  /** countTokens spends no generateContent quota: it goes straight through with a held key. */
  async function forwardCount(call: Call): Promise<Response> {
    const key = await cfg.keys.any();
    if (!key) {
      throw new GatewayError(
        503,
        `the gateway holds no usable key for ${call.model}`,
      );
    }
    const upstream = await fetch(
      upstreamUrl(cfg.googleBaseUrl, call.version, call.model, "countTokens"),
      {
        method: "POST",
        headers: { "content-type": "application/json", "x-goog-api-key": key },
        body: JSON.stringify(call.body),
        signal: AbortSignal.timeout(cfg.timeoutMs),
      },
    );
    return new Response(await upstream.text(), {
      status: upstream.status,
      headers: passHeaders(upstream),
    });
  }

  return async function handle(req: Request): Promise<Response> {
    try {
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
      const raw = await readBody(req, cfg.maxBodyBytes);
      const body = parseJson(raw);
      if (
        body === undefined || body === null || typeof body !== "object" ||
        Array.isArray(body)
      ) {
        throw new GatewayError(
          400,
          "Invalid JSON payload received: the body must be a JSON object.",
        );
      }
      const digest = await sha256(token);
      const found = await db.identifyCaller(cfg.sql, toHex(digest), model);
      if (
        found === null ||
        !constantTimeEqual(fromHex(found.stored_sha256), digest)
      ) {
        throw new GatewayError(
          401,
          "Caller token not valid (unknown or revoked).",
        );
      }
      if (found.resolved_model === null) {
        throw new GatewayError(
          404,
          `models/${model} is not found in the quota pool's limits.`,
        );
      }
      if (!found.model_allowed) {
        throw new GatewayError(
          403,
          `caller ${found.caller} may not use ${model}.`,
        );
      }
      const shaped = shapeRequest(model, body as Json);
      const { mode, maxWaitMs } = waitOf(req.headers, cfg.defaultMaxWaitMs);
      const call: Call = {
        caller: found.caller,
        model,
        version,
        stream: method === "streamGenerateContent",
        body: shaped,
        estimate: 0,
        mode,
        deadline: performance.now() + (mode === "WAIT" ? maxWaitMs : 0),
        requestId: requestIdOf(req.headers),
        signal: req.signal,
      };
      if (method === "countTokens") return await forwardCount(call);
      call.estimate = await countTokens(cfg, version, model, shaped);
      return await generate(call);
    } catch (err) {
      return errorResponse(err, cfg);
    }
  };
}

function errorResponse(err: unknown, cfg: Config): Response {
  if (err instanceof UpstreamRefusal) return err.response();
  if (err instanceof GatewayError) {
    if (err.code >= 500) {
      cfg.log({ event: "error", code: err.code, message: err.message });
    }
    return err.response();
  }
  const state = db.sqlstateOf(err);
  const message = describe(err);
  if (state === "LL001") return new GatewayError(404, message).response();
  if (state !== null && state !== "LL006" && state !== "LL008") {
    return new GatewayError(400, message).response();
  }
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

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

export function upstreamUrl(
  base: string,
  version: string,
  model: string,
  method: Method,
): string {
  const path = method === "streamGenerateContent"
    ? "streamGenerateContent?alt=sse"
    : method;
  return `${base.replace(/\/+$/, "")}/${version}/models/${
    encodeURIComponent(model)
  }:${path}`;
}

function passHeaders(upstream: Response): Headers {
  const headers = new Headers();
  const type = upstream.headers.get("content-type");
  if (type) headers.set("content-type", type);
  return headers;
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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

function requestIdOf(headers: Headers): string {
  const given = headers.get("x-llm-limits-request-id")?.trim();
  if (given && given.length <= 200) return given;
  return crypto.randomUUID().replaceAll("-", "");
}
