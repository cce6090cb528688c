-- The quota machinery's own state: settings, per-project overrides, the
-- reservation ledger, the per-(group, model) window state and the audit log.
--
-- Window bookkeeping (why it is O(1) per grant, whatever the ledger size):
-- google_ai_quota_state keeps running totals of what the ledger rows granted
-- after `swept_to` contribute. Each acquire first "sweeps": it subtracts the
-- rows that aged out since the last sweep (an index range scan over just those
-- rows), then compares totals + request against the limits. Every ledger row
-- is added once and subtracted once, so the cost does not grow with history.

create schema if not exists google_ai_internal;
revoke all on schema google_ai_internal from public, anon, authenticated;
comment on schema google_ai_internal is
'Private helpers of llm-limits. Not exposed through PostgREST; called by the public RPCs.';

-- One row of tunables. Changing a row is audited like any config change.
create table public.google_ai_settings (
    id boolean primary key default true check (id),
    window_ms integer not null default 60000 check (window_ms between 1000 and 3600000),
    window_guard_ms integer not null default 1000 check (window_guard_ms between 0 and 60000),
    rpd_time_zone text not null default 'America/Los_Angeles',
    lease_ms integer not null default 600000 check (lease_ms between 1000 and 86400000),
    max_wait_cap_ms integer not null default 90000
    check (max_wait_cap_ms between 0 and 110000),
    wait_recheck_ms integer not null default 25 check (wait_recheck_ms between 5 and 5000),
    default_cooldown_ms integer not null default 60000
    check (default_cooldown_ms between 0 and 86400000),
    ledger_retention interval not null default interval '7 days',
    audit_retention interval not null default interval '30 days',
    updated_at timestamptz not null default now()
);

comment on table public.google_ai_settings is
'Tunables of llm-limits (one row). max_wait_cap_ms stays under Supabase''s 2-minute statement limit.';

insert into public.google_ai_settings (id) values (true)
on conflict (id) do nothing;

-- A paid-tier project gets its own numbers for a model; null falls back to
-- google_ai_model_limits.
create table public.google_ai_group_limits (
    quota_group text not null,
    model text not null references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    rpm integer check (rpm >= 0),
    tpm integer check (tpm >= 0),
    rpd integer check (rpd >= 0),
    updated_at timestamptz not null default now(),
    primary key (quota_group, model)
);

create index google_ai_group_limits_model_idx on public.google_ai_group_limits (model);

comment on table public.google_ai_group_limits is
'Per quota group (Cloud project) overrides of google_ai_model_limits, e.g. for a paid tier.';

-- One row per grant. `counted_requests`/`counted_tokens` are what the row
-- contributes to its windows right now: the estimate at grant, the actual
-- prompt tokens after commit_usage, zero after an unsent release.
create table public.google_ai_reservations (
    id uuid primary key default gen_random_uuid(),
    key_alias text not null,
    quota_group text not null,
    model text not null,
    api_model text not null,
    status text not null default 'reserved'
    check (status in ('reserved', 'committed', 'released', 'rate_limited', 'expired')),
    estimated_tokens integer not null check (estimated_tokens >= 0),
    actual_tokens integer check (actual_tokens >= 0),
    completion_tokens integer check (completion_tokens >= 0),
    counted_requests smallint not null default 1 check (counted_requests in (0, 1)),
    counted_tokens integer not null check (counted_tokens >= 0),
    granted_at timestamptz not null,
    rpd_day date not null,
    lease_until timestamptz not null,
    settled_at timestamptz,
    caller text,
    request_id text
);

-- The sweep and retry_after walk one (group, model) in grant order.
create index google_ai_reservations_window_idx
on public.google_ai_reservations (quota_group, model, granted_at);

-- Lease expiry only looks at open reservations.
create index google_ai_reservations_open_idx
on public.google_ai_reservations (lease_until) where status = 'reserved';

comment on table public.google_ai_reservations is
'Reservation ledger: one row per grant from acquire(), settled by commit_usage/release/report_rate_limit or expired by its lease.';

create table public.google_ai_quota_state (
    quota_group text not null,
    model text not null,
    window_requests integer not null default 0,
    window_tokens bigint not null default 0,
    -- Ledger rows granted at or before this instant are already subtracted.
    swept_to timestamptz not null default '-infinity',
    rpd_day date,
    day_requests integer not null default 0,
    cooldown_until timestamptz,
    cooldown_reason text,
    primary key (quota_group, model)
)
-- Updated on every grant: room on the page keeps those updates HOT.
with (fillfactor = 20);

comment on table public.google_ai_quota_state is
'Running window totals per (quota group, model), maintained by the RPCs under a row lock. Derived from the ledger; safe to truncate while idle.';

create table public.google_ai_audit_log (
    id bigint generated always as identity primary key,
    ts timestamptz not null default clock_timestamp(),
    event text not null check (
        event in (
            'granted', 'refused', 'committed', 'released', 'rate_limited',
            'expired', 'config_changed', 'key_disabled'
        )
    ),
    key_alias text,
    model text,
    reservation_id uuid,
    actor text not null default current_user,
    details jsonb not null default '{}'::jsonb
);

-- Two rows are appended per call in the hot path, so the log carries one
-- cheap index: BRIN on the append order, for `--since` reads and trimming.
create index google_ai_audit_log_ts_idx on public.google_ai_audit_log using brin (ts);

comment on table public.google_ai_audit_log is
'Append-only audit of every grant, refusal, settlement, 429 and configuration change.';

-- Append-only: rows are never edited; only run_maintenance() trims old ones,
-- and it says so through a transaction-local setting.
create function google_ai_internal.guard_audit_log()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if tg_op = 'DELETE'
       and coalesce(current_setting('llm_limits.trimming_audit', true), '') = 'on' then
        return old;
    end if;
    raise exception using
        errcode = 'LL010',
        message = 'google_ai_audit_log is append-only',
        hint = 'Old rows are trimmed by public.run_maintenance().';
end;
$$;

create trigger google_ai_audit_log_append_only
before update or delete on public.google_ai_audit_log
for each row execute function google_ai_internal.guard_audit_log();

alter table public.google_ai_settings enable row level security;
alter table public.google_ai_group_limits enable row level security;
alter table public.google_ai_reservations enable row level security;
alter table public.google_ai_quota_state enable row level security;
alter table public.google_ai_audit_log enable row level security;

revoke all on table
public.google_ai_settings,
public.google_ai_group_limits,
public.google_ai_reservations,
public.google_ai_quota_state,
public.google_ai_audit_log
from public, anon, authenticated, service_role;

grant select, insert, update, delete on table
public.google_ai_settings,
public.google_ai_group_limits
to service_role;
grant select on table
public.google_ai_reservations,
public.google_ai_quota_state,
public.google_ai_audit_log
to service_role;

revoke all on sequence public.google_ai_audit_log_id_seq from public, anon, authenticated, service_role;
revoke all on function google_ai_internal.guard_audit_log() from public, anon, authenticated;

-- The one clock every RPC reads. clock_timestamp(), not now(): now() is frozen
-- for the whole transaction and a WAIT loop lives inside one. Tests steer it
-- with `set llm_limits.now = '<timestamptz>'` (a fixed instant) and/or
-- `set llm_limits.clock_skew = '<interval>'` (a shift of the real clock).
create function google_ai_internal.clock()
returns timestamptz
language plpgsql
volatile
set search_path = ''
as $$
begin
    return
        coalesce(
            nullif(pg_catalog.current_setting('llm_limits.now', true), '')::timestamptz,
            pg_catalog.clock_timestamp()
        )
        + coalesce(
            nullif(pg_catalog.current_setting('llm_limits.clock_skew', true), '')::interval,
            interval '0'
        );
end;
$$;

revoke all on function google_ai_internal.clock() from public, anon, authenticated;
