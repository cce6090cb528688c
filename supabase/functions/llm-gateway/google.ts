/**
 * Read Google's answers as the Python client does (`google_errors.py`): what a 429 says about
 * the quota, which failures are worth another attempt, when the key itself is refused, and the
 * usage to commit.
 */

import type { Json } from "./errors.ts";

const RETRY_IN = /retry in\s+([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b/i;
const DURATION = /^\s*([0-9]+(?:\.[0-9]+)?)s\s*$/;
const MAX_DELAY_MS = 86_400_000; // report_rate_limit accepts up to a day

export interface QuotaViolation {
  quotaId: string | null;
  retryDelayMs: number | null;
}

function errorOf(body: unknown): Json {
  const inner = (body as Json | null)?.error;
  return inner && typeof inner === "object" ? inner as Json : {};
}

function detailsOfType(body: unknown, name: string): Json[] {
  const details = errorOf(body).details;
  if (!Array.isArray(details)) return [];
  return details.filter((d): d is Json =>
    d !== null && typeof d === "object" &&
    String(d["@type"] ?? "").endsWith("google.rpc." + name)
  );
}

function clampMs(seconds: number): number {
  return Math.max(0, Math.min(MAX_DELAY_MS, Math.round(seconds * 1000)));
}

/** quotaId and retry delay of a 429 body; a per-day violation wins (it binds until midnight). */
export function quotaOf(body: unknown): QuotaViolation {
  const ids: string[] = [];
  for (const failure of detailsOfType(body, "QuotaFailure")) {
    for (
      const v of Array.isArray(failure.violations) ? failure.violations : []
    ) {
      const id = (v as Json | null)?.quotaId;
      if (id) ids.push(String(id));
    }
  }
  const perDay = ids.filter((id) => id.includes("PerDay"));
  const quotaId = (perDay.length ? perDay : ids)[0] ?? null;
  let retryDelayMs: number | null = null;
  for (const info of detailsOfType(body, "RetryInfo")) {
    const match = DURATION.exec(String(info.retryDelay ?? ""));
    if (match) {
      retryDelayMs = clampMs(Number(match[1]));
      break;
    }
  }
  if (retryDelayMs === null) {
    const match = RETRY_IN.exec(String(errorOf(body).message ?? ""));
    if (match) {
      const value = Number(match[1]);
      retryDelayMs = clampMs(
        match[2].toLowerCase() === "ms" ? value / 1000 : value,
      );
    }
  }
  return { quotaId, retryDelayMs };
}

/** Why Google refuses the key itself (invalid or leaked), or null for any other error. */
export function keyRejection(status: number, body: unknown): string | null {
  const message = String(errorOf(body).message ?? "").toLowerCase();
  if (status === 403 && message.includes("reported as leaked")) {
    return "API_KEY_LEAKED";
  }
  const reasons = detailsOfType(body, "ErrorInfo").map((d) =>
    String(d.reason ?? "")
  );
  if (
    status === 400 &&
    (reasons.includes("API_KEY_INVALID") ||
      message.includes("api key not valid"))
  ) {
    return "API_KEY_INVALID";
  }
  return null;
}

/** A failure that may succeed on another attempt: 5xx and 408. */
export function isTransient(status: number): boolean {
  return status >= 500 || status === 408;
}

export interface Usage {
  promptTokens: number | null;
  completionTokens: number;
  thoughtsTokens: number | null;
}

/** The usage of one response (or one streamed chunk), if it carries any. */
export function usageOf(response: unknown): Usage | null {
  const usage = (response as Json | null)?.usageMetadata as Json | undefined;
  if (!usage || typeof usage !== "object") return null;
  const n = (
    v: unknown,
  ) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const thoughts = n(usage.thoughtsTokenCount);
  return {
    promptTokens: n(usage.promptTokenCount),
    completionTokens: (n(usage.candidatesTokenCount) ?? 0) + (thoughts ?? 0),
    thoughtsTokens: thoughts,
  };
}

/** What the ledger keeps about an answer besides its tokens (as the Python client's meta). */
export function metaOf(response: unknown): Json {
  const r = (response ?? {}) as Json;
  const candidates = Array.isArray(r.candidates) ? r.candidates as Json[] : [];
  const meta: Json = {};
  if (r.modelVersion) meta.model_version = r.modelVersion;
  if (candidates[0]?.finishReason) {
    meta.finish_reason = candidates[0].finishReason;
  }
  return meta;
}
