-- What run_maintenance() keeps of every event whose detail it deletes: the
-- count per UTC day, event, key and model, kept for good. Retention that fits
-- a Supabase Free project (500 MB) without losing count of anything.

create table public.google_ai_event_counts (
    day date not null,
    event text not null,
    key_alias text,
    model text,
    events bigint not null default 0 check (events >= 0),
    tokens bigint not null default 0,
    updated_at timestamptz not null default now(),
    constraint google_ai_event_counts_key unique nulls not distinct (day, event, key_alias, model)
);

comment on table public.google_ai_event_counts is
'Audit events per UTC day, key and model, counted by run_maintenance() as detail rows age out (a folded refusal row counts its refusals; tokens are counted input tokens of grants).';

alter table public.google_ai_event_counts enable row level security;
revoke all on table public.google_ai_event_counts from public, anon, authenticated, service_role;
grant select on table public.google_ai_event_counts to service_role;
