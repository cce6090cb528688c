/**
 * Every SQL statement the gateway runs, on one postgres.js pool: one
 * `select ... from public.fn(...)` per RPC, with named, explicitly cast
 * arguments, as the Python client does. No table is read, so the gateway can
 * run as the least-privilege role `llm_limits_gateway` (supabase/roles.sql).
 *
 * The URL may go through Supavisor's transaction pooler, so nothing is
 * prepared (`prepare: false`).
 *
 * A lost connection (a restart, a pooler hiccup) is retried on a fresh one as
 * an `Outage` says (at once, then with a jittered backoff): the lookups for
 * `RIDE_OUT_MS`, `settle` for `SETTLE_RIDE_OUT_MS` (it is idempotent, and an
 * answer already served must keep its usage record). `acquire` is not retried
 * here: the protocol retries it with its ticket until the call's deadline.
 */

import postgres from "postgres";

export type Sql = ReturnType<typeof postgres>;

// How long a lost database is retried: a call with no wait budget (NO_WAIT,
// the lookups before acquire) rides out RIDE_OUT_MS, more than a fast
// restart's ~0.3 s down; a settle, the record of an answer already served,
// rides out SETTLE_RIDE_OUT_MS. The Python client's db.py uses the same.
export const RIDE_OUT_MS = 2_000;
export const SETTLE_RIDE_OUT_MS = 10_000;
const FIRST_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 1_000;

/**
 * A lost database, retried until `until` (performance.now()): the first retry
 * at once (most losses are one dead connection), then pauses of 50 ms
 * doubling to 1 s, each drawn from its upper half so that callers cut off
 * together do not all come back together. Through a fast restart (~0.3 s) a
 * caller is back well within a WAIT ticket's grace (1 s): it keeps its place.
 */
export class Outage {
  private retries = 0;

  constructor(readonly until: number) {}

  /** From now: until `deadline`, and for at least `ms`. */
  static lasting(ms: number, deadline = 0): Outage {
    return new Outage(Math.max(deadline, performance.now() + ms));
  }

  /** The pause before the next try (ms), or null when the time is up. */
  nextPause(): number | null {
    const left = this.until - performance.now();
    if (left <= 0) return null;
    const step = this.retries === 0
      ? 0
      : Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (this.retries - 1));
    this.retries++;
    return Math.min(left, step / 2 + Math.random() * step / 2);
  }
}

/** `run`, tried again while the database is lost, for `ms` at most. */
async function rideOut<T>(ms: number, run: () => Promise<T>): Promise<T> {
  let outage: Outage | null = null;
  while (true) {
    try {
      return await run();
    } catch (err) {
      if (!isConnectionLost(err)) throw err;
      outage ??= Outage.lasting(ms);
      const pause = outage.nextPause();
      if (pause === null) throw err;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

export interface Caller {
  caller: string;
  stored_sha256: string; // hex
  resolved_model: string | null;
  model_allowed: boolean;
}

/** One `public.acquire_result` row. */
export interface Grant {
  granted: boolean;
  reservation_id: string | null;
  key_alias: string | null;
  env_var_name: string | null;
  model: string; // the API model id to call
  waited_ms: number | null;
  reason: string | null;
  retry_after_ms: number | null;
  ticket: string | null; // a WAIT's place in line: pass it back while queued
  queue_position: number | null; // while queued: 1 = next in line
  expected_wait_ms: number | null; // while queued: when its turn is expected
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
  endUser: string | null; // the person the call is for; the database keeps a keyed hash
}

/** How the exchange with Google failed, in the words `public.settle` takes. */
export type TransportError =
  | "timeout"
  | "connection_lost"
  | "connect_failed"
  | "not_sent"
  | "cancelled";

/** One `public.settle` row: what the answer meant and what to do next. */
export interface Verdict {
  action: string; // commit, rate_limited, disable_key, release_sent, release_unsent
  retry: boolean;
  retry_after_ms: number | null;
}

export function connect(url: string, max: number): Sql {
  return postgres(url, {
    prepare: false,
    max,
    idle_timeout: 60,
    connect_timeout: 10,
    // Reconnect when a statement needs it: an Outage paces the retries.
    // postgres.js's own backoff grows with every failed connect of the whole
    // pool (3^n / 100 s, up to 20 s), so after a restart's burst of refused
    // connects it held statements 5 s and more, past their calls' deadlines.
    backoff: () => 0,
    connection: { application_name: "llm-gateway" },
    onnotice: () => {},
  });
}

export async function identifyCaller(
  sql: Sql,
  digestHex: string,
  model: string,
): Promise<Caller | null> {
  const rows = await rideOut(
    RIDE_OUT_MS,
    () =>
      sql<Caller[]>`
    select caller, encode(stored_sha256, 'hex') as stored_sha256, resolved_model, model_allowed
    from public.identify_caller(
      token_sha256 => decode(${digestHex}::text, 'hex'), model => ${model}::text
    )`,
  );
  return rows[0] ?? null;
}

/** Active keys: alias and the env var (a function secret) that holds its value. */
export async function poolKeys(
  sql: Sql,
): Promise<{ alias: string; envVar: string }[]> {
  const rows = await rideOut(
    RIDE_OUT_MS,
    () =>
      sql<{ key_alias: string; env_var_name: string }[]>`
    select key_alias, env_var_name from public.pool_keys()`,
  );
  return rows.map((r) => ({ alias: r.key_alias, envVar: r.env_var_name }));
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
      ticket => ${a.ticket}::uuid, end_user => ${a.endUser}::text
    )`;
  const cancel = () => query.cancel();
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    return (await query)[0];
  } finally {
    signal?.removeEventListener("abort", cancel);
  }
}

/**
 * Hand Google's answer (status and JSON body) or the transport failure to
 * settle, through an outage of up to SETTLE_RIDE_OUT_MS.
 */
export async function settle(
  sql: Sql,
  reservationId: string,
  httpStatus: number | null,
  response: unknown,
  transportError: TransportError | null,
): Promise<Verdict> {
  const body = response === undefined ? null : JSON.stringify(response);
  const rows = await rideOut(
    SETTLE_RIDE_OUT_MS,
    () =>
      sql<Verdict[]>`
    select action, retry, retry_after_ms from public.settle(
      reservation_id => ${reservationId}::uuid, http_status => ${httpStatus}::int,
      response => ${body}::text::jsonb, transport_error => ${transportError}::text
    )`,
  );
  return rows[0];
}

/** A lost or refused connection, as opposed to an error the database raised. */
export function isConnectionLost(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? "");
  return code.startsWith("08") || ["57P01", "57P02", "57P03"].includes(code) ||
    /^(CONNECTION_|CONNECT_TIMEOUT|ECONN|EPIPE|ETIMEDOUT)/.test(code);
}

/**
 * The database refused our input: its RPCs raise their own SQLSTATE class
 * (LLxxx) for bad input only, with the message worth showing the caller.
 */
export function isRefusedInput(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" && code.startsWith("LL");
}
