/**
 * Server-sent events. SseWatcher watches a `streamGenerateContent?alt=sse`
 * stream go by without changing a byte of it: each `data:` event is parsed
 * only to keep the last one, whose usageMetadata (the totals) and
 * finishReason settle reads. EarlyStream answers a stream before its grant,
 * so a caller that asked can watch its wait (queue.ts).
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

/**
 * A stream answered before its grant, for a caller that asked to watch its
 * wait: SSE comments while it waits, then the answer, which is Google's
 * stream as it comes, or an error as one `data:` event, the form in which
 * Google ends a stream it cannot finish (google-genai raises it as an
 * APIError with the event's code). The caller hanging up aborts `leaving`.
 */
export class EarlyStream {
  private readonly pipe = new TransformStream<Uint8Array, Uint8Array>();
  private readonly writer = this.pipe.writable.getWriter();
  private readonly encoder = new TextEncoder();
  readonly body = this.pipe.readable;

  constructor(leaving: AbortController) {
    // The writable side errors when the caller cancels the readable one.
    this.writer.closed.catch(() => leaving.abort());
  }

  comment(text: string): void {
    const line = `: ${text.replace(/[\r\n]+/g, " ")}\n\n`;
    this.writer.write(this.encoder.encode(line)).catch(() => {}); // gone: `leaving` says so
  }

  /** Send `answer` after the comments, and end; never throws. */
  async end(answer: Response): Promise<void> {
    try {
      if (answer.ok && answer.body) await this.pass(answer.body);
      else await this.write(`data: ${await errorEvent(answer)}\n\n`);
      await this.writer.close();
    } catch (err) {
      await this.writer.abort(err).catch(() => {});
    }
  }

  private async pass(stream: ReadableStream<Uint8Array>): Promise<void> {
    const reader = stream.getReader();
    while (true) {
      const { done, value } = await reader.read(); // Google's cut: thrown, settled already
      if (done) return;
      try {
        await this.writer.write(value);
      } catch (gone) {
        await reader.cancel(gone); // settled as cancelled, as a hang-up mid-stream is
        throw gone;
      }
    }
  }

  private write(text: string): Promise<void> {
    return this.writer.write(this.encoder.encode(text));
  }
}

/** An error answer as one line of JSON, Google-shaped whatever came. */
async function errorEvent(answer: Response): Promise<string> {
  const text = await answer.text();
  try {
    const parsed = JSON.parse(text);
    if (parsed !== null && typeof parsed === "object" && "error" in parsed) {
      return JSON.stringify(parsed);
    }
  } catch {
    // not JSON (a proxy's error page): described below
  }
  const message = text.trim().slice(0, 500) || `HTTP ${answer.status}`;
  return JSON.stringify({ error: { code: answer.status, message } });
}
