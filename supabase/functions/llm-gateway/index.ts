// llm-gateway: the Gemini REST API in front of the llm-limits quota pool (see gateway.ts).
//
// Settings (function secrets / environment):
//   SUPABASE_DB_URL              the project's database (Edge Functions get it)
//   GOOGLE_API_KEY_*             the pool's keys, named by google_ai_api_keys.env_var_name
//   GOOGLE_GEMINI_BASE_URL       Google's API root (default https://generativelanguage.googleapis.com)
//   LLM_GATEWAY_DB_POOL          connections per isolate (default 8)
//   LLM_GATEWAY_MAX_BODY_BYTES   largest request body (default 20 MiB, Google's own inline limit)
//   LLM_GATEWAY_TIMEOUT_MS       per call to Google (default 60000)
//   LLM_GATEWAY_BACKOFF_MS       first pause after a 5xx or timeout (default 500)
//   LLM_GATEWAY_DEFAULT_WAIT_MS  WAIT budget without an x-llm-limits-max-wait header (default 30000)

import { connect } from "./db.ts";
import { createHandler } from "./gateway.ts";
import { KeyRing } from "./tokens.ts";

function setting(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  const value = raw === undefined || raw === "" ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative number`);
  }
  return value;
}

const dbUrl = Deno.env.get("SUPABASE_DB_URL");
if (!dbUrl) throw new Error("SUPABASE_DB_URL is not set");
const sql = connect(dbUrl, setting("LLM_GATEWAY_DB_POOL", 8));
const env = (name: string) => Deno.env.get(name);

Deno.serve(createHandler({
  sql,
  keys: new KeyRing(sql, env),
  googleBaseUrl: Deno.env.get("GOOGLE_GEMINI_BASE_URL") ||
    "https://generativelanguage.googleapis.com",
  maxBodyBytes: setting("LLM_GATEWAY_MAX_BODY_BYTES", 20 * 1024 * 1024),
  timeoutMs: setting("LLM_GATEWAY_TIMEOUT_MS", 60_000),
  backoffMs: setting("LLM_GATEWAY_BACKOFF_MS", 500),
  maxAttempts: 3,
  defaultMaxWaitMs: setting("LLM_GATEWAY_DEFAULT_WAIT_MS", 30_000),
  log: (line) =>
    console.log(JSON.stringify({ ts: new Date().toISOString(), ...line })),
}));
