// llm-gateway: the Gemini REST API in front of the llm-limits quota pool (see gateway.ts).
//
// Settings (function secrets / environment):
//   LLM_GATEWAY_DB_URL           the database, best as the least-privilege role
//                                llm_limits_gateway (supabase/roles.sql); else
//   SUPABASE_DB_URL              the project's database (Edge Functions get it)
//   GOOGLE_API_KEY_*             the pool's keys, named by google_ai_api_keys.env_var_name
//   GOOGLE_GEMINI_BASE_URL       Google's API root (default https://generativelanguage.googleapis.com)
//   LLM_GATEWAY_DB_POOL          connections per isolate (default 8)
//   LLM_GATEWAY_MAX_BODY_BYTES   largest request body (default 20 MiB, Google's own inline limit)
//   LLM_GATEWAY_TIMEOUT_MS       per call to Google (default 60000)
//   LLM_GATEWAY_MAX_ATTEMPTS     calls to Google per request at most (default 3)
//   LLM_GATEWAY_DEFAULT_WAIT_MS  WAIT budget without an x-llm-limits-max-wait header (default 30000)
// How long to pause before another attempt is settle's answer (google_ai_settings).

import { connect } from "./db.ts";
import { createHandler } from "./gateway.ts";
import { KeyRing } from "./keys.ts";

function setting(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  const value = raw === undefined || raw === "" ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative number`);
  }
  return value;
}

const dbUrl = Deno.env.get("LLM_GATEWAY_DB_URL") ||
  Deno.env.get("SUPABASE_DB_URL");
if (!dbUrl) {
  throw new Error("neither LLM_GATEWAY_DB_URL nor SUPABASE_DB_URL is set");
}
const sql = connect(dbUrl, setting("LLM_GATEWAY_DB_POOL", 8));
const env = (name: string) => Deno.env.get(name);

Deno.serve(createHandler({
  sql,
  keys: new KeyRing(sql, env),
  googleBaseUrl: Deno.env.get("GOOGLE_GEMINI_BASE_URL") ||
    "https://generativelanguage.googleapis.com",
  maxBodyBytes: setting("LLM_GATEWAY_MAX_BODY_BYTES", 20 * 1024 * 1024),
  timeoutMs: setting("LLM_GATEWAY_TIMEOUT_MS", 60_000),
  maxAttempts: Math.max(1, setting("LLM_GATEWAY_MAX_ATTEMPTS", 3)),
  defaultMaxWaitMs: setting("LLM_GATEWAY_DEFAULT_WAIT_MS", 30_000),
  log: (line) =>
    console.log(JSON.stringify({ ts: new Date().toISOString(), ...line })),
}));
