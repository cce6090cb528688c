/**
 * How the gateway counts a prompt before acquiring (optional to the protocol:
 * acquire only needs an upper bound, and settle replaces it with the prompt
 * tokens Google reports).
 *
 * First Google's own `countTokens`, called with any key the gateway holds. It
 * is exact for every model (Gemma and Gemini, text and media, chat-template
 * tokens included), it spends none of generateContent's quota, and it needs
 * no vocabulary inside the function (Gemma's is 33 MB, a cold-start cost on
 * every Edge isolate). When it gives no count (no key, an error of its own, a
 * timeout) the gateway falls back to a UTF-8 byte count, an upper bound:
 * SentencePiece with byte fallback never makes more tokens than bytes.
 * Counting never fails a call: a request Google refuses is refused by
 * generateContent, and settled like any other answer.
 */

import type { Json } from "./errors.ts";
import { field, isGemma } from "./gemma.ts";
import type { KeyRing } from "./keys.ts";

const COUNT_TIMEOUT_MS = 10_000;
const BASE_TOKENS = 16;

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
  if (key === null) return byteBound(body);
  const base = cfg.googleBaseUrl.replace(/\/+$/, "");
  try {
    const answer = await fetch(
      `${base}/${version}/models/${encodeURIComponent(model)}:countTokens`,
      {
        method: "POST",
        headers: { "content-type": "application/json", "x-goog-api-key": key },
        body: JSON.stringify({ contents: field(body, "contents") }),
        signal: AbortSignal.timeout(Math.min(cfg.timeoutMs, COUNT_TIMEOUT_MS)),
      },
    );
    const counted = await answer.json().catch(() => null);
    if (answer.ok && typeof counted?.totalTokens === "number") {
      // Gemma's system text is already folded into contents; Gemini's extras are bounded.
      return counted.totalTokens + (isGemma(model) ? 0 : extrasBound(body));
    }
    cfg.log({ event: "count_fallback", model, status: answer.status });
  } catch (err) {
    const error = err instanceof Error ? err.name : String(err);
    cfg.log({ event: "count_fallback", model, error });
  }
  return byteBound(body);
}
