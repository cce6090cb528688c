/**
 * Google-shaped errors: every answer the gateway makes itself has the body Google's API uses,
 * `{"error": {"code", "message", "status", "details"?}}`, so an SDK raises the error class its
 * users already know.
 */

export type Json = Record<string, unknown>;

const STATUS: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  405: "INVALID_ARGUMENT",
  413: "INVALID_ARGUMENT",
  429: "RESOURCE_EXHAUSTED",
  499: "CANCELLED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

export const RPC_TYPE = "type.googleapis.com/google.rpc.";

/** The database's reason, on every refusal the gateway answers for the quota pool. */
export const REASON_HEADER = "x-llm-limits-reason";

/** A failure the gateway answers itself, before or instead of Google. */
export class GatewayError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: Json[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): Json {
    const error: Json = {
      code: this.code,
      message: this.message,
      status: STATUS[this.code],
    };
    if (this.details) error.details = this.details;
    return { error };
  }

  response(): Response {
    return Response.json(this.body(), {
      status: this.code,
      headers: this.headers,
    });
  }
}

/** A duration as Google writes it (`"21s"`, `"1.5s"`), rounded up to the tenth of a second. */
export function formatDelay(ms: number): string {
  const tenths = Math.ceil(Math.max(0, ms) / 100);
  return tenths % 10 === 0 ? `${tenths / 10}s` : `${(tenths / 10).toFixed(1)}s`;
}

/** The 429 for a refusal by the quota pool: RetryInfo carries when to try again. */
export function refusal(
  model: string,
  reason: string,
  retryAfterMs: number | null,
): GatewayError {
  const details: Json[] = [{
    "@type": RPC_TYPE + "ErrorInfo",
    reason: reason.toUpperCase(),
    domain: "llm-limits",
    metadata: { model },
  }];
  let message = `llm-limits refused ${model}: ${reason}.`;
  const headers: Record<string, string> = { [REASON_HEADER]: reason };
  if (retryAfterMs !== null) {
    const delay = formatDelay(retryAfterMs);
    details.push({ "@type": RPC_TYPE + "RetryInfo", retryDelay: delay });
    message += ` Please retry in ${delay}.`;
    headers["retry-after"] = String(Math.ceil(retryAfterMs / 1000));
  }
  return new GatewayError(429, message, details, headers);
}
