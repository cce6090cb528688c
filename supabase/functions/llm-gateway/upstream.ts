/**
 * The wire to Google: one call with the granted key, bounded by a timeout and
 * by the caller staying, and how it failed in the words `public.settle` takes
 * (the carrier's own knowledge of its HTTP client, like the Python client's
 * transport.py; what Google's answers mean is settle's).
 */

import type { TransportError } from "./db.ts";
import type { Json } from "./errors.ts";
import { SseWatcher } from "./sse.ts";

/** What one call brought back: Google's answer (read whole, or a stream) or a failure. */
export type Sent =
  | { status: number; type: string | null; text: string; json: unknown }
  | { status: number; type: string | null; stream: ReadableStream<Uint8Array> }
  | { wire: TransportError };

/** Told once how a passed-through stream ended: its last event, or how it broke. */
export type StreamEnd = (
  status: number | null,
  last: Json | null,
  wire: TransportError | null,
) => Promise<unknown>;

export interface Target {
  googleBaseUrl: string;
  timeoutMs: number;
}

export interface Outgoing {
  version: string;
  model: string; // the API model id the grant names
  stream: boolean;
  body: Json;
  signal: AbortSignal; // the caller went away
}

/** One call to Google; a 2xx stream comes back as a stream that reports its end. */
export async function sendUpstream(
  target: Target,
  req: Outgoing,
  key: string,
  onStreamEnd: StreamEnd,
): Promise<Sent> {
  const abort = new AbortController();
  const timer = setTimeout(
    () => abort.abort(new DOMException("timed out", "TimeoutError")),
    target.timeoutMs,
  );
  const onCallerGone = () =>
    abort.abort(new DOMException("gone", "AbortError"));
  req.signal.addEventListener("abort", onCallerGone);
  const method = req.stream
    ? "streamGenerateContent?alt=sse"
    : "generateContent";
  const base = target.googleBaseUrl.replace(/\/+$/, "");
  const url = `${base}/${req.version}/models/${
    encodeURIComponent(req.model)
  }:${method}`;
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-goog-api-key": key },
      body: JSON.stringify(req.body),
      signal: abort.signal,
    });
    const type = res.headers.get("content-type");
    if (res.ok && req.stream) {
      return {
        status: res.status,
        type,
        stream: passThrough(res, abort, onStreamEnd),
      };
    }
    const text = await res.text();
    return { status: res.status, type, text, json: parseJson(text) };
  } catch (err) {
    return { wire: wireError(err, abort.signal) };
  } finally {
    clearTimeout(timer); // a stream's too: a long stream is not a stuck request
    req.signal.removeEventListener("abort", onCallerGone);
  }
}

/**
 * Google's stream, passed through as it comes. `onEnd` hears of its last event
 * when it ends, `cancelled` when the caller hangs up, `connection_lost` when
 * Google's side breaks off; it is awaited before the caller sees the end.
 */
function passThrough(
  upstream: Response,
  abort: AbortController,
  onEnd: StreamEnd,
): ReadableStream<Uint8Array> {
  const reader = upstream.body!.getReader();
  const watcher = new SseWatcher();
  let ended: Promise<unknown> | null = null;
  const end = (status: number | null, wire: TransportError | null) =>
    ended ??= onEnd(status, watcher.end(), wire);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (!done) {
          watcher.push(value);
          return controller.enqueue(value);
        }
        await end(upstream.status, null);
        controller.close();
      } catch (err) {
        await end(null, wireError(err, abort.signal));
        controller.error(err);
      }
    },
    async cancel() {
      const ending = end(null, "cancelled");
      abort.abort(new DOMException("gone", "AbortError"));
      await ending;
    },
  });
}

/** settle's name for a failed fetch or read; `signal` aborts on our timeout or the caller. */
export function wireError(err: unknown, signal: AbortSignal): TransportError {
  if (signal.aborted) {
    return signal.reason?.name === "TimeoutError" ? "timeout" : "cancelled";
  }
  // Deno's fetch says "client error (Connect)" when no connection was made: nothing was sent.
  const cause = (err as { cause?: { message?: string } })?.cause?.message;
  return /client error \(Connect\)/.test(cause ?? "")
    ? "connect_failed"
    : "connection_lost";
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null; // not JSON (a proxy's error page): settle reads the status alone
  }
}
