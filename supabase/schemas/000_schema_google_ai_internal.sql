-- The schemas of llm-limits. Public holds the tables and the RPCs (Supabase
-- exposes it through PostgREST, so nothing in it is open to the API roles);
-- google_ai_internal holds the helpers the RPCs call, reachable by no role
-- but the owner.
--
-- Conventions every file below follows:
--   * Every function states its volatility and language, pins
--     `set search_path = ''` and schema-qualifies every name. Its docblock
--     gives purpose, parameters, result, SQLSTATEs and one example.
--   * Functions that acquire and settle call are PL/pgSQL: with that SET
--     clause a LANGUAGE sql function is never inlined, and PostgreSQL 15
--     plans its body again at every call (220_window_protocol.sql, PLANS).
--   * Grants are explicit, next to each object: EXECUTE is revoked from
--     public, anon and authenticated, then granted per function (RPCs to
--     service_role only). Every table has RLS on and no policy. Supabase's
--     default privileges are never relied on.
--   * SQLSTATEs of llm-limits (class LL; raised with DETAIL and HINT):
--       LL001 unknown model            LL006 unknown reservation
--       LL002 invalid token count      LL007 invalid argument
--       LL003 request larger than TPM  LL009 unknown key
--       LL004 unknown mode             LL010 audit log is append-only
--       LL999 internal sentinel: raised and caught inside one function to roll
--             back a subtransaction (a refused try_reserve, a ticket_in_call
--             probe); it never reaches a caller.
--   * Quota functions return a verdict; they raise only for bad input and
--     broken invariants.

create schema if not exists google_ai_internal;
revoke all on schema google_ai_internal from public, anon, authenticated;
comment on schema google_ai_internal is
'Private helpers of llm-limits. Not exposed through PostgREST; called by the public RPCs.';

-- pgcrypto's hmac() keys the hash that stands for a bot's end user
-- (237_end_user_limits.sql). Supabase installs it in `extensions`; a plain
-- Postgres gets it here.
create extension if not exists pgcrypto with schema extensions;
