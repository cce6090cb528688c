-- One row per run_maintenance() pass (a table production had; adopted).

create table public.google_ai_maintenance_log (
    id bigint generated always as identity primary key,
    operation text not null,
    tables_affected text [],
    deleted_count integer,
    started_at timestamptz not null default now(),
    completed_at timestamptz,
    status text,
    details jsonb,
    created_at timestamptz not null default now()
);

alter table public.google_ai_maintenance_log enable row level security;
revoke all on table public.google_ai_maintenance_log from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_maintenance_log to service_role;
revoke all on sequence public.google_ai_maintenance_log_id_seq from public, anon, authenticated;
