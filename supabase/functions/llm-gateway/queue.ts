/**
 * A request's wait in line, as its caller can read it (the contract's queue
 * feedback, issue 23): the first place in line the database gave it and how
 * long its acquires took, as response headers on every answer that followed
 * an acquire; and each `queued` answer as it comes, for a stream whose
 * caller asked to watch (gateway.ts, sse.ts).
 *
 * The headers are the only form google-genai reads without harm: it parses
 * every non-empty stream line that is not `data: ` as JSON, so an SSE
 * comment, `event:` or `retry:` line raises UnknownApiResponseError (3.6.1,
 * sync and async; tests/gateway/test_gateway_queue.py keeps that fact
 * checked). Live progress is therefore sent only to a caller that asks.
 */

import type { Grant } from "./db.ts";
import type { WaitListener } from "./protocol.ts";

/** The first place in line the request was given; 0: it was never told to wait. */
export const QUEUE_POSITION_HEADER = "x-llm-limits-queue-position";
/** Milliseconds its acquires took, over every attempt: the wait for quota a person feels. */
export const WAITED_HEADER = "x-llm-limits-waited-ms";

export class WaitInLine implements WaitListener {
  firstPosition = 0;
  private waited = 0;
  private since: number | null = null;
  private asked = false;
  /** Told of each `queued` answer, after it is recorded. */
  onQueued: ((grant: Grant) => void) | null = null;

  acquiring(): void {
    this.asked = true;
    this.since = performance.now();
  }

  queued(grant: Grant): void {
    if (this.firstPosition === 0) {
      this.firstPosition = grant.queue_position ?? 1;
    }
    this.onQueued?.(grant);
  }

  acquired(): void {
    if (this.since !== null) this.waited += performance.now() - this.since;
    this.since = null;
  }

  get waitedMs(): number {
    const now = this.since === null ? 0 : performance.now() - this.since;
    return Math.round(this.waited + now);
  }

  /** The headers, once an acquire was made; none for a request refused before it. */
  headers(): Record<string, string> {
    if (!this.asked) return {};
    return {
      [QUEUE_POSITION_HEADER]: String(this.firstPosition),
      [WAITED_HEADER]: String(this.waitedMs),
    };
  }

  /** `answer` with the headers added (the gateway builds every answer it sends). */
  stamp(answer: Response): Response {
    for (const [name, value] of Object.entries(this.headers())) {
      answer.headers.set(name, value);
    }
    return answer;
  }
}

/** One `queued` answer, as the comment a watching caller reads. */
export function queuedComment(grant: Grant): string {
  const position = grant.queue_position ?? 1;
  const wait = grant.expected_wait_ms ?? 0;
  return `llm-limits queued position=${position} expected_wait_ms=${wait} model=${grant.model}`;
}
