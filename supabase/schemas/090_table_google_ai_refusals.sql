-- Refusals of acquire(), folded: one row stands for repeated refusals of one
-- caller, model, key set and reason (google_ai_internal.record_acquire_verdict),
-- so a `while True:` loop writes at most one row a minute.

create table public.google_ai_refusals (
    -- Shares the audit records' sequence: ids are unique across the stream.
    id bigint primary key default pg_catalog.nextval('public.google_ai_audit_records_id_seq'),
    fold_key bigint not null,
    first_at timestamptz not null,
    last_at timestamptz not null,
    refusals integer not null default 1 check (refusals >= 1),
    model text not null,
    key_alias text,
    key_set text [],
    reason text,
    caller text,
    request_id text,
    mode text,
    tokens integer,
    max_wait_ms integer,
    waited_ms integer,
    rounds integer,
    retry_after_ms integer,
    end_user_hash bytea
)
-- Each folded refusal updates its row in place (count, last time): keep room
-- on the page so those updates stay HOT.
with (fillfactor = 50);

-- The open fold of a (caller, model, key set, reason) is its newest row.
create index google_ai_refusals_fold_idx on public.google_ai_refusals (fold_key, first_at);
create index google_ai_refusals_first_at_idx on public.google_ai_refusals using brin (first_at);

comment on table public.google_ai_refusals is
'Refusals of acquire(), folded: one row stands for `refusals` refusals of one caller, model, key set and reason, each within refusal_fold_ms of the previous, from first_at to last_at.';

comment on column public.google_ai_refusals.end_user_hash is
'The keyed hash of the end user refused (acquire''s end_user), or null; part of the fold.';

alter table public.google_ai_refusals enable row level security;
revoke all on table public.google_ai_refusals from public, anon, authenticated, service_role;
grant select on table public.google_ai_refusals to service_role;
