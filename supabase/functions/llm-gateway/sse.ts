/**
 * Watch a `streamGenerateContent?alt=sse` stream go by without changing a byte
 * of it: each `data:` event is parsed only to keep the last one, whose
 * usageMetadata (the totals) and finishReason settle reads.
 */

import type { Json } from "./errors.ts";

export class SseWatcher {
  private buffer = "";
  private readonly decoder = new TextDecoder();
  /** The last event so far (a JSON object). */
  last: Json | null = null;

  push(chunk: Uint8Array): void {
    this.buffer += this.decoder.decode(chunk, { stream: true });
    const events = this.buffer.split(/\r?\n\r?\n/);
    this.buffer = events.pop() ?? "";
    for (const event of events) this.event(event);
  }

  /** The stream ended: read what is left, and return the last event. */
  end(): Json | null {
    this.buffer += this.decoder.decode();
    if (this.buffer.trim()) this.event(this.buffer);
    this.buffer = "";
    return this.last;
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
    if (parsed !== null && typeof parsed === "object") {
      this.last = parsed as Json;
    }
  }
}
