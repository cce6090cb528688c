-- The running window totals per (quota group, model): why a grant is O(1),
-- whatever the ledger size. A row keeps what the ledger rows granted after
-- `swept_to` contribute. Each acquire first sweeps: it subtracts the rows
-- that aged out since the last sweep (an index range scan over just those
-- rows), then compares totals + request against the limits. Every ledger row
-- is added once and subtracted once. The row is derived data: when missing
-- it is rebuilt from the ledger (220_window_protocol.sql).

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
    -- Pacing (try_reserve): while a higher-priority class is active here, the
    -- classes below it get one slot per hold / rpm, so slots free one at a
    -- time instead of in bursts. paced_until is when the next paced grant
    -- may come; lead_priority and lead_at the best class granted lately.
    paced_until timestamptz,
    lead_priority integer,
    lead_at timestamptz,
    -- An outage (225_outage_cooldown.sql): failed answers since Google last
    -- answered here; the length of the outage cooldown now running (null
    -- while Google answers); when it began (a grant made after it is a probe).
    failures_in_a_row integer not null default 0,
    outage_cooldown_ms integer,
    outage_cooled_at timestamptz,
    primary key (quota_group, model)
)
-- Updated on every grant: room on the page keeps those updates HOT.
with (fillfactor = 20);

comment on table public.google_ai_quota_state is
'Running window totals per (quota group, model), maintained by the RPCs under a row lock. Derived from the ledger; safe to truncate while idle.';

alter table public.google_ai_quota_state enable row level security;
revoke all on table public.google_ai_quota_state from public, anon, authenticated, service_role;
grant select on table public.google_ai_quota_state to service_role;
