/**
 * The keys the gateway holds, and how it counts a prompt before acquiring.
 *
 * Counting: Google's own `countTokens`, called with any key the gateway holds, before acquire.
 * It is exact for every model (Gemma and Gemini, text and media, chat-template tokens
 * included), it spends none of generateContent's quota, and it needs no vocabulary inside the
 * function (Gemma's is 33 MB, a cold-start cost on every Edge isolate). When it cannot answer
 * (no key, a 429 of its own, a timeout) the gateway falls back to a UTF-8 byte count, an upper
 * bound: SentencePiece with byte fallback never makes more tokens than bytes. Either way
 * commit_usage replaces the estimate with the prompt tokens Google reports.
 */

import * as db from "./db.ts";
import type { Json } from "./errors.ts";
import { field, isGemma } from "./gemma.ts";
import { keyRejection } from "./google.ts";

const KEYS_TTL_MS = 60_000;
const COUNT_TIMEOUT_MS = 10_000;
const BASE_TOKENS = 16;

/** Which pool keys this deployment holds: their env vars (function secrets) are set. */
export class KeyRing {
  private cache:
    | { aliases: string[]; envVars: string[]; until: number }
    | null = null;
  private turn = 0;

  constructor(
    private readonly sql: db.Sql,
    private readonly env: (name: string) => string | undefined,
  ) {}

  async held(): Promise<string[]> {
    return (await this.load()).aliases;
  }

  /** A key's value by its env var name; null when this deployment does not hold it. */
  value(envVar: string): string | null {
    return envVar ? this.env(envVar)?.trim() || null : null;
  }

  /** Some held key's value, taking turns, for calls that spend no quota. */
  async any(): Promise<string | null> {
    const { envVars } = await this.load();
    if (envVars.length === 0) return null;
    this.turn = (this.turn + 1) % envVars.length;
    return this.value(envVars[this.turn]);
  }

  /** Read the pool again on next use (a key was disabled, or a grant named one not held). */
  forget(): void {
    this.cache = null;
  }

  private async load() {
    if (this.cache === null || performance.now() > this.cache.until) {
      const held = (await db.activeKeys(this.sql)).filter((k) =>
        this.value(k.envVar)
      );
      this.cache = {
        aliases: held.map((k) => k.alias),
        envVars: held.map((k) => k.envVar),
        until: performance.now() + KEYS_TTL_MS,
      };
    }
    return this.cache;
  }
}

function utf8Bytes(value: unknown): number {
  return value == null
    ? 0
    : new TextEncoder().encode(JSON.stringify(value)).length;
}

/**
 * An upper bound on the input tokens of `body` without a tokenizer: its JSON's UTF-8 bytes
 * (every text byte plus quoting and structure, which outweighs the few control tokens per turn).
 */
export function byteBound(body: Json): number {
  return BASE_TOKENS + utf8Bytes(field(body, "contents")) + extrasBound(body);
}

/** What countTokens with `contents` alone leaves out: system text, tools, a schema. */
function extrasBound(body: Json): number {
  const config = field(body, "generationConfig");
  return utf8Bytes(field(body, "systemInstruction")) +
    utf8Bytes(field(body, "tools")) +
    utf8Bytes(field(body, "toolConfig")) +
    utf8Bytes(field(config, "responseSchema")) +
    utf8Bytes(field(config, "responseJsonSchema"));
}

export async function countTokens(
  cfg: {
    keys: KeyRing;
    googleBaseUrl: string;
    timeoutMs: number;
    log: (line: Json) => void;
  },
  version: string,
  model: string,
  body: Json,
): Promise<number> {
  const key = await cfg.keys.any();
  if (key !== null) {
    const base = cfg.googleBaseUrl.replace(/\/+$/, "");
    try {
      const answer = await fetch(
        `${base}/${version}/models/${encodeURIComponent(model)}:countTokens`,
        {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "x-goog-api-key": key,
          },
          body: JSON.stringify({ contents: field(body, "contents") }),
          signal: AbortSignal.timeout(
            Math.min(cfg.timeoutMs, COUNT_TIMEOUT_MS),
          ),
        },
      );
      const text = await answer.text();
      const counted = parseObject(text);
      if (
        (answer.status === 400 || answer.status === 404) &&
        keyRejection(answer.status, counted) === null
      ) {
        // Google refuses the request itself (no contents, an unknown model): it would refuse
        // generateContent too, so it is answered now, before any quota is spent.
        throw new UpstreamRefusal(
          answer.status,
          text,
          answer.headers.get("content-type"),
        );
      }
      if (answer.ok && typeof counted?.totalTokens === "number") {
        // Gemma's system text is already folded into contents; Gemini's extras are bounded.
        return counted.totalTokens + (isGemma(model) ? 0 : extrasBound(body));
      }
      cfg.log({ event: "count_fallback", model, status: answer.status });
    } catch (err) {
      if (err instanceof UpstreamRefusal) throw err;
      cfg.log({
        event: "count_fallback",
        model,
        error: err instanceof Error ? err.name : String(err),
      });
    }
  }
  return byteBound(body);
}

/** Google's own 4xx to a request, to be passed back unchanged. */
export class UpstreamRefusal extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    readonly contentType: string | null,
  ) {
    super(`Google refused the request with ${status}`);
  }

  response(): Response {
    const headers = this.contentType
      ? { "content-type": this.contentType }
      : undefined;
    return new Response(this.body, { status: this.status, headers });
  }
}

function parseObject(text: string): Json | null {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" ? value as Json : null;
  } catch {
    return null;
  }
}
