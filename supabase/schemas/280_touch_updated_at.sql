/*
 * touch_updated_at: keep updated_at honest without relying on every writer
 * to set it. Trigger function (BEFORE UPDATE); returns the new row with
 * updated_at = now(). Raises nothing.
 * Example: update public.google_ai_api_keys set priority = 1 where key_alias = 'k1';
 */
create or replace function google_ai_internal.touch_updated_at()
returns trigger
language plpgsql
volatile
set search_path = ''
as $$
begin
    new.updated_at := pg_catalog.now();
    return new;
end;
$$;

revoke all on function google_ai_internal.touch_updated_at() from public, anon, authenticated;

create trigger google_ai_api_keys_touch
before update on public.google_ai_api_keys
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_model_limits_touch
before update on public.google_ai_model_limits
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_group_limits_touch
before update on public.google_ai_group_limits
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_settings_touch
before update on public.google_ai_settings
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_caller_classes_touch
before update on public.google_ai_caller_classes
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_caller_policies_touch
before update on public.google_ai_caller_policies
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_caller_budgets_touch
before update on public.google_ai_caller_budgets
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_fallbacks_touch
before update on public.google_ai_fallbacks
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_end_users_touch
before update on public.google_ai_end_users
for each row execute function google_ai_internal.touch_updated_at();

create trigger google_ai_clock_switch_touch
before update on google_ai_internal.clock_switch
for each row execute function google_ai_internal.touch_updated_at();

-- A gateway caller's row is touched only by a config change, not by
-- last_used_at (see google_ai_callers_audit_update).
create trigger google_ai_callers_touch
before update on public.google_ai_callers
for each row
when (
    (old.name, old.token_sha256, old.allowed_models, old.active, old.notes)
    is distinct from (new.name, new.token_sha256, new.allowed_models, new.active, new.notes)
)
execute function google_ai_internal.touch_updated_at();
