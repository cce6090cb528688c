/**
 * Watch a `streamGenerateContent?alt=sse` stream go by without changing a byte of it: every
 * `data:` event is parsed only to remember the last usage and finish reason, which the commit
 * uses.
 */

import type { Json } from "./errors.ts";

export class SseWatcher {
  private buffer = "";
  private readonly decoder = new TextDecoder();
  /** The last event that carried usageMetadata (the final chunk carries the totals). */
  lastWithUsage: Json | null = null;
  /** The last event of all, for its finishReason and modelVersion. */
  last: Json | null = null;

  push(chunk: Uint8Array): void {
    this.buffer += this.decoder.decode(chunk, { stream: true });
    const events = this.buffer.split(/\r?\n\r?\n/);
    this.buffer = events.pop() ?? "";
    for (const event of events) this.event(event);
  }

  end(): void {
    this.buffer += this.decoder.decode();
    if (this.buffer.trim()) this.event(this.buffer);
    this.buffer = "";
  }

  private event(text: string): void {
    const data = text.split(/\r?\n/)
      .filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).trimStart())
      .join("\n");
    if (!data) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      return; // not ours to judge: the caller gets the bytes as they came
    }
    if (parsed === null || typeof parsed !== "object") return;
    this.last = parsed as Json;
    if ("usageMetadata" in this.last) this.lastWithUsage = this.last;
  }
}
