/**
 * The call protocol, carried: acquire (while `queued`, sleep and call again
 * with the ticket; `call.waits` hears where it stands), send to Google with
 * the granted key, hand what came back to `public.settle`, and do what it
 * says (at most `maxAttempts` attempts).
 * What Google's answer means (a 429's quota, a rejected key, what is worth
 * another attempt and after how long) is settle's to decide, not ours.
 */

import * as db from "./db.ts";
import { GatewayError, type Json, REASON_HEADER, refusal } from "./errors.ts";
import type { KeyRing } from "./keys.ts";
import { sendUpstream, type Sent, type Target } from "./upstream.ts";

export interface Carrier extends Target {
  sql: db.Sql;
  keys: KeyRing;
  maxAttempts: number;
  log: (line: Json) => void;
}

export interface Call {
  caller: string;
  model: string; // as the request names it
  version: string;
  stream: boolean;
  body: Json;
  estimate: number;
  mode: "WAIT" | "NO_WAIT";
  deadline: number; // performance.now() milliseconds
  requestId: string;
  endUser: string | null; // x-llm-limits-end-user: the person the call is for
  signal: AbortSignal; // the caller went away
  waits?: WaitListener;
}

/** Hears how a call waits for quota: each acquire's span, and each `queued` answer within it. */
export interface WaitListener {
  acquiring(): void;
  queued(grant: db.Grant): void;
  acquired(): void; // granted, refused or failed
}

/** The last attempt's grant and what Google answered (or how the call failed). */
export async function carry(
  cfg: Carrier,
  call: Call,
): Promise<[db.Grant, Sent]> {
  let last: [db.Grant, Sent] | null = null;
  for (let attempt = 1; attempt <= cfg.maxAttempts; attempt++) {
    call.waits?.acquiring();
    const grant = await acquireGrant(cfg, call)
      .finally(() => call.waits?.acquired());
    const key = cfg.keys.value(grant.env_var_name);
    // A stream settles itself when it ends. Once its first bytes have gone to
    // the caller, a cut or a hang-up is final: the call cannot be tried again.
    const sent: Sent = key === null ? { wire: "not_sent" } : await sendUpstream(
      cfg,
      { ...call, model: grant.model },
      key,
      (status, lastEvent, wire) =>
        settle(cfg, call, grant, status, lastEvent, wire),
    );
    last = [grant, sent];
    if ("stream" in sent) break;
    const verdict = "wire" in sent
      ? await settle(cfg, call, grant, null, null, sent.wire)
      : await settle(cfg, call, grant, sent.status, sent.json, null);
    if (key === null || verdict.action === "disable_key") cfg.keys.forget();
    if (!verdict.retry || attempt === cfg.maxAttempts) break;
    await sleep(verdict.retry_after_ms ?? 0);
  }
  if (last === null) throw new GatewayError(500, "no attempt was allowed");
  return last;
}

/**
 * The one waiting rule: while `queued`, sleep as told (holding no connection),
 * call again. A lost database is retried, the ticket keeping its place, until
 * the deadline (for RIDE_OUT_MS at least: a NO_WAIT has no wait budget).
 */
async function acquireGrant(cfg: Carrier, call: Call): Promise<db.Grant> {
  let ticket: string | null = null;
  let outage: db.Outage | null = null;
  while (true) {
    if (call.signal.aborted) {
      throw new GatewayError(499, "the caller went away");
    }
    let grant: db.Grant;
    try {
      grant = await db.acquire(cfg.sql, {
        model: call.model,
        tokens: call.estimate,
        mode: call.mode,
        maxWaitMs: Math.max(0, Math.floor(call.deadline - performance.now())),
        keyAliases: await cfg.keys.held(),
        caller: call.caller,
        requestId: call.requestId,
        ticket,
        endUser: call.endUser,
      }, call.signal);
    } catch (err) {
      if (call.signal.aborted) continue; // it cancelled the statement
      if (!db.isConnectionLost(err)) throw err;
      outage ??= db.Outage.lasting(db.RIDE_OUT_MS, call.deadline);
      const pause = outage.nextPause();
      if (pause === null) throw err;
      await sleep(pause);
      continue;
    }
    if (grant.granted && !call.signal.aborted) return grant;
    if (grant.granted) await settle(cfg, call, grant, null, null, "not_sent");
    else if (grant.reason !== "queued") {
      cfg.log({ event: "refused", ...ids(call), reason: grant.reason });
      throw grant.reason === "no_key"
        ? new GatewayError(
          503,
          `no key the gateway holds serves ${call.model}`,
          undefined,
          { [REASON_HEADER]: "no_key" },
        )
        : refusal(call.model, grant.reason ?? "refused", grant.retry_after_ms);
    }
    ticket = grant.ticket;
    call.waits?.queued(grant);
    await sleep(grant.retry_after_ms ?? 0);
  }
}

/**
 * settle's verdict (db.settle rides out a lost connection: it is idempotent).
 * If the database cannot be told, the grant stays counted until its lease
 * ends (an over-count, never an under-count) and no other attempt is made.
 */
async function settle(
  cfg: Carrier,
  call: Call,
  grant: db.Grant,
  status: number | null,
  response: unknown,
  wire: db.TransportError | null,
): Promise<db.Verdict> {
  const rid = grant.reservation_id!;
  let verdict: db.Verdict = {
    action: "unsettled",
    retry: false,
    retry_after_ms: null,
  };
  try {
    verdict = await db.settle(cfg.sql, rid, status, response, wire);
  } catch (err) {
    cfg.log({ event: "settle_failed", ...ids(call), error: String(err) });
  }
  cfg.log({
    event: "attempt",
    ...ids(call),
    reservation_id: rid,
    key_alias: grant.key_alias,
    waited_ms: grant.waited_ms,
    estimated_tokens: call.estimate,
    status,
    wire,
    ...verdict,
  });
  return verdict;
}

function ids(call: Call): Json {
  return { caller: call.caller, model: call.model, request_id: call.requestId };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
