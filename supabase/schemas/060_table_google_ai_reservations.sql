-- The reservation ledger: one row per grant, and the record of the call.
-- `counted_requests`/`counted_tokens` are what the row contributes to its
-- windows right now: the estimate at grant, the actual prompt tokens after
-- a commit, zero after an unsent release. The ledger row is also the
-- record of its grant and of its commit or release (waited_ms, details);
-- google_ai_audit_log derives those events from it.
--
-- A commit's UPDATE touches no indexed column and the table keeps room on
-- each page (fillfactor), so the update stays on its page (HOT) and writes no
-- index. That is why there is no partial index on open leases: maintenance
-- finds them with a scan of the retention-bounded ledger.

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
    request_id text,
    waited_ms integer check (waited_ms >= 0),
    details jsonb,
    caller_class text,
    end_user_hash bytea
)
-- Room for the commit's new row version on the same page.
with (fillfactor = 85);

-- The sweep and retry_after walk one (group, model) in grant order.
create index google_ai_reservations_window_idx
on public.google_ai_reservations (quota_group, model, granted_at);

-- A person's grants in the window, and their last grant (their turn in line).
create index google_ai_reservations_end_user_idx
on public.google_ai_reservations (end_user_hash, granted_at)
where end_user_hash is not null;

comment on table public.google_ai_reservations is
'Reservation ledger: one row per grant from acquire(), settled by settle() (committed, released or rate_limited) or expired by its lease.';
comment on column public.google_ai_reservations.waited_ms is
'How long acquire() ran before this grant (ms): the WAIT time.';
comment on column public.google_ai_reservations.details is
'Null for most rows. A release''s reason and previous status under "released"; audit rows written before the ledger became the call record, moved here under their event name.';
comment on column public.google_ai_reservations.caller_class is
'The caller''s class at grant (reserves count the window per class). Null for grants before caller classes.';

comment on column public.google_ai_reservations.end_user_hash is
'The keyed hash of the end user the grant served (acquire''s end_user; google_ai_internal.end_user_hash), or null.';

alter table public.google_ai_reservations enable row level security;
revoke all on table public.google_ai_reservations from public, anon, authenticated, service_role;
grant select on table public.google_ai_reservations to service_role;
