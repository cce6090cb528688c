/**
 * Shape a request for its model before any quota is spent, as the Python client does.
 *
 * Gemma through the Gemini API rejects `systemInstruction`, JSON mode and function calling with
 * a permanent 400. The system text is folded into the first user turn; the other two are
 * refused here with a 400, so a request that can never succeed costs no quota.
 */

import { GatewayError, type Json } from "./errors.ts";

const TEXT_MIME_TYPES = new Set(["", "text/plain"]);

export function isGemma(model: string): boolean {
  return model.toLowerCase().replace(/^models\//, "").startsWith("gemma-");
}

/** A request field in either spelling: REST clients send camelCase, the SDK some snake_case. */
export function field(obj: unknown, camel: string): unknown {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return undefined;
  }
  const snake = camel.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
  const record = obj as Json;
  return record[camel] ?? record[snake];
}

function withoutField(obj: Json, camel: string): Json {
  const snake = camel.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
  const { [camel]: _a, [snake]: _b, ...rest } = obj;
  return rest;
}

function systemText(instruction: unknown): string {
  const parts = typeof instruction === "string"
    ? [{ text: instruction }]
    : Array.isArray(instruction)
    ? instruction
    : field(instruction, "parts") ?? [instruction];
  const texts: string[] = [];
  for (const part of parts as unknown[]) {
    const text = typeof part === "string" ? part : field(part, "text");
    if (typeof text !== "string") {
      throw new GatewayError(
        400,
        "gemma: systemInstruction may only hold text to be folded",
      );
    }
    texts.push(text);
  }
  return texts.join("\n");
}

/** `contents` with `text` leading its first user turn. */
export function foldSystemInstruction(contents: unknown, text: string): Json[] {
  const prefix = { text: text + "\n\n" };
  const turns = Array.isArray(contents)
    ? contents
    : contents === undefined
    ? []
    : [contents];
  const first = turns[0] as Json | undefined;
  if (first && typeof first === "object" && (first.role ?? "user") === "user") {
    const parts = Array.isArray(first.parts) ? first.parts : [];
    return [
      { ...first, role: "user", parts: [prefix, ...parts] },
      ...turns.slice(1),
    ] as Json[];
  }
  return [{ role: "user", parts: [{ text }] }, ...turns] as Json[];
}

/** The body to send for `model`; throws a 400 GatewayError for what Gemma can never do. */
export function shapeRequest(model: string, body: Json): Json {
  if (!isGemma(model)) return body;
  const config = field(body, "generationConfig");
  const mime = field(config, "responseMimeType");
  if (
    (mime !== undefined && mime !== null &&
      !TEXT_MIME_TYPES.has(String(mime))) ||
    field(config, "responseSchema") != null ||
    field(config, "responseJsonSchema") != null
  ) {
    throw new GatewayError(
      400,
      `${model}: JSON mode (structured output) is not enabled`,
    );
  }
  const tools = field(body, "tools");
  if (Array.isArray(tools) ? tools.length > 0 : tools != null) {
    throw new GatewayError(
      400,
      `${model}: function calling (tools) is not enabled`,
    );
  }
  const instruction = field(body, "systemInstruction");
  if (instruction == null) return body;
  const text = systemText(instruction);
  const rest = withoutField(body, "systemInstruction");
  return {
    ...rest,
    contents: foldSystemInstruction(field(body, "contents"), text),
  };
}
