-- Fallback chains: when a caller whose class may fall back would be refused
-- for `model`, acquire() tries `fallback_model` (and its own fallback, up to
-- four steps) within the same wait. The grant names the model served.

create table public.google_ai_fallbacks (
    model text primary key references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    fallback_model text not null references public.google_ai_model_limits (model)
    on update cascade on delete cascade,
    updated_at timestamptz not null default now(),
    check (fallback_model <> model)
);

create index google_ai_fallbacks_fallback_idx on public.google_ai_fallbacks (fallback_model);

comment on table public.google_ai_fallbacks is
'model -> the model to serve instead when a caller whose class may fall back would be refused (chains follow, at most four steps, never in a loop).';

alter table public.google_ai_fallbacks enable row level security;
revoke all on table public.google_ai_fallbacks from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.google_ai_fallbacks to service_role;
