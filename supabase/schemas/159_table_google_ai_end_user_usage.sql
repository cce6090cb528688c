-- What each end user has been granted on a Pacific day, across models: one
-- row per person and day, written at a grant (an update of the day's row,
-- which stays on its page), so the daily limit is one read and concurrent
-- grants of one person are counted in turn (the row's lock, after the
-- window row's: 220_window_protocol.sql). The minute's limit reads the
-- ledger itself. run_maintenance deletes the rows of days older than the
-- ledger retention.

create table public.google_ai_end_user_usage (
    end_user_hash bytea not null,
    day date not null,
    requests integer not null default 0 check (requests >= 0),
    primary key (end_user_hash, day)
)
-- Room for each grant's new row version on the same page.
with (fillfactor = 70);

comment on table public.google_ai_end_user_usage is
'Grants per end user (keyed hash) and Pacific day, across models: one row per person and day, kept for ledger_retention.';

alter table public.google_ai_end_user_usage enable row level security;
revoke all on table public.google_ai_end_user_usage from public, anon, authenticated, service_role;
grant select on table public.google_ai_end_user_usage to service_role;
