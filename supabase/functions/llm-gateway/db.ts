/**
 * Every SQL statement the gateway runs, on one postgres.js pool.
 *
 * `SUPABASE_DB_URL` reaches the project's database (through Supavisor where the URL says so),
 * so nothing is prepared (`prepare: false`): the transaction pooler has no prepared statements.
 * Only `select ... from public.fn(...)` with named, explicitly cast arguments, plus two reads of
 * configuration (the key pool and the wait cap), as the Python client does.
 */

import postgres from "postgres";

export type Sql = ReturnType<typeof postgres>;

export interface Caller {
  caller: string;
  stored_sha256: string; // hex
  resolved_model: string | null;
  model_allowed: boolean;
}

export interface Grant {
  granted: boolean;
  reservation_id: string | null;
  key_alias: string | null;
  env_var_name: string | null;
  model: string;
  waited_ms: number | null;
  reason: string | null;
  retry_after_ms: number | null;
}

export interface AcquireArgs {
  model: string;
  tokens: number;
  mode: "WAIT" | "NO_WAIT";
  maxWaitMs: number;
  keyAliases: string[];
  caller: string;
  requestId: string;
  ticket: string | null;
}

export function connect(url: string, max: number): Sql {
  return postgres(url, {
    prepare: false,
    max,
    idle_timeout: 60,
    connect_timeout: 10,
    connection: { application_name: "llm-gateway" },
    onnotice: () => {},
  });
}

export async function identifyCaller(
  sql: Sql,
  digestHex: string,
  model: string,
): Promise<Caller | null> {
  const rows = await sql<Caller[]>`
    select caller, encode(stored_sha256, 'hex') as stored_sha256, resolved_model, model_allowed
    from public.identify_caller(
      token_sha256 => decode(${digestHex}::text, 'hex'), model => ${model}::text
    )`;
  return rows[0] ?? null;
}

/** Active keys: alias and the env var (a function secret) that holds its value. */
export async function activeKeys(
  sql: Sql,
): Promise<{ alias: string; envVar: string }[]> {
  const rows = await sql<{ key_alias: string; env_var_name: string }[]>`
    select key_alias, env_var_name from public.google_ai_api_keys where is_active`;
  return rows.map((r) => ({ alias: r.key_alias, envVar: r.env_var_name }));
}

export async function maxWaitCapMs(sql: Sql): Promise<number> {
  const rows = await sql<{ cap: number }[]>`
    select max_wait_cap_ms as cap from public.google_ai_settings where id`;
  return rows[0]?.cap ?? 0;
}

/** One acquire; `signal` cancels it server-side (a WAIT must not outlive its caller). */
export async function acquire(
  sql: Sql,
  a: AcquireArgs,
  signal?: AbortSignal,
): Promise<Grant> {
  const aliases = sql.array(a.keyAliases);
  const query = sql<Grant[]>`
    select * from public.acquire(
      model => ${a.model}::text, tokens => ${a.tokens}::int, mode => ${a.mode}::text,
      max_wait_ms => ${a.maxWaitMs}::int, key_aliases => ${aliases}::text[],
      caller => ${a.caller}::text, request_id => ${a.requestId}::text,
      ticket => ${a.ticket}::uuid
    )`;
  const cancel = () => query.cancel();
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    return (await query)[0];
  } finally {
    signal?.removeEventListener("abort", cancel);
  }
}

export async function commitUsage(
  sql: Sql,
  reservationId: string,
  prompt: number,
  completion: number,
  meta: Record<string, unknown>,
): Promise<boolean> {
  const rows = await sql<{ ok: boolean }[]>`
    select public.commit_usage(
      reservation_id => ${reservationId}::uuid, prompt_tokens => ${prompt}::int,
      completion_tokens => ${completion}::int, meta => ${
    JSON.stringify(meta)
  }::text::jsonb
    ) as ok`;
  return rows[0]?.ok ?? false;
}

export async function release(
  sql: Sql,
  reservationId: string,
  reason: string,
  sent: boolean,
): Promise<void> {
  await sql`
    select public.release(
      reservation_id => ${reservationId}::uuid, reason => ${reason}::text, sent => ${sent}::boolean
    )`;
}

export async function reportRateLimit(
  sql: Sql,
  reservationId: string,
  quotaId: string | null,
  retryDelayMs: number | null,
): Promise<void> {
  await sql`
    select public.report_rate_limit(
      reservation_id => ${reservationId}::uuid, quota_id => ${quotaId}::text,
      retry_delay_ms => ${retryDelayMs}::int
    )`;
}

export async function disableKey(
  sql: Sql,
  alias: string,
  reason: string,
): Promise<void> {
  await sql`select public.disable_key(key_alias => ${alias}::text, reason => ${reason}::text)`;
}

/** A lost or refused connection, as opposed to an error the database raised. */
export function isConnectionLost(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? "");
  return code.startsWith("08") || ["57P01", "57P02", "57P03"].includes(code) ||
    /^(CONNECTION_|CONNECT_TIMEOUT|ECONN|EPIPE|ETIMEDOUT)/.test(code);
}

/** Our own SQLSTATE (LLxxx), or null. */
export function sqlstateOf(err: unknown): string | null {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && /^LL\d{3}$/.test(code) ? code : null;
}
