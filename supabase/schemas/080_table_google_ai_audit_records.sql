-- The appended audit records: 429s, lease expiries, config changes, disabled
-- and enabled keys, limits Google reported, outage cooldowns (and, from
-- before the ledger became the call record, grants, settlements and
-- refusals). Append-only (250_audit_append_only.sql); the whole event stream
-- is the view google_ai_audit_log.
--
-- The event list lives in the check constraint and nowhere else:
-- public.audit_event_kinds() reads it back.

create table public.google_ai_audit_records (
    id bigint generated always as identity primary key,
    ts timestamptz not null default clock_timestamp(),
    event text not null check (
        event in (
            'granted', 'refused', 'committed', 'released', 'rate_limited',
            'expired', 'config_changed', 'key_disabled', 'key_enabled', 'limit_observed',
            'outage_cooldown', 'outage_ended'
        )
    ),
    key_alias text,
    model text,
    reservation_id uuid,
    actor text not null default current_user,
    details jsonb not null default '{}'::jsonb
);

-- Rare events, read by time: one cheap BRIN index on the append order, for
-- `--since` reads and trimming.
create index google_ai_audit_records_ts_idx on public.google_ai_audit_records using brin (ts);

comment on table public.google_ai_audit_records is
'Append-only audit rows of 429s, lease expiries, configuration changes and disabled keys (and of grants, settlements and refusals written before the ledger became the call record). Read the full event stream from the view google_ai_audit_log.';

alter table public.google_ai_audit_records enable row level security;
revoke all on table public.google_ai_audit_records from public, anon, authenticated, service_role;
grant select on table public.google_ai_audit_records to service_role;
-- google_ai_refusals takes its ids from this sequence too; only the owner
-- (the SECURITY DEFINER writers) draws from it.
revoke all on sequence public.google_ai_audit_records_id_seq
from public, anon, authenticated, service_role;
