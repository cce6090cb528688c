-- Every insert/update/delete of keys, limits, overrides, settings, gateway
-- callers, end users' rules and the clock switch writes a `config_changed` audit record with
-- the old and new values, whoever made it (an RPC, the CLI, the Supabase
-- dashboard or plain SQL): configuration edits come from anywhere, and only
-- a trigger catches them all. (RPCs that know why something happened, such
-- as disable_key or record_rate_limit, write their own record inline, in the
-- transaction of the change, so it commits or rolls back with it.)
--
-- SECURITY DEFINER: whoever may change the config (service_role, the CLI's
-- login role) must be able to write the audit row without any privilege on
-- the audit records or on google_ai_internal.

/*
 * masked_end_user: a row as a config_changed record shows it: an end
 * user's hash (google_ai_end_users) as its label (end_user_label), never
 * whole; any other row unchanged.
 *
 * Parameters: p_row, the row as jsonb (null passes through).
 * Returns the row. Raises nothing.
 * Example: select google_ai_internal.masked_end_user(to_jsonb(e)) from public.google_ai_end_users as e;
 */
create or replace function google_ai_internal.masked_end_user(p_row jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
    select case
        when p_row ? 'end_user_hash' then (p_row - 'end_user_hash') || pg_catalog.jsonb_build_object(
            'end_user', google_ai_internal.end_user_label((p_row ->> 'end_user_hash')::bytea)
        )
        else p_row
    end
$$;

revoke all on function google_ai_internal.masked_end_user(jsonb) from public, anon, authenticated;

/*
 * audit_config_change: trigger that audits configuration changes as
 * config_changed records with old and new values, whoever made them. The
 * actor recorded is the caller's role, not the definer. An end user shows
 * as their hash's label (masked_end_user).
 * Trigger function; example: update public.google_ai_settings set lease_ms = 300000;
 */
create or replace function google_ai_internal.audit_config_change()
returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    old_row jsonb := case
        when tg_op <> 'INSERT' then google_ai_internal.masked_end_user(pg_catalog.to_jsonb(old))
    end;
    new_row jsonb := case
        when tg_op <> 'DELETE' then google_ai_internal.masked_end_user(pg_catalog.to_jsonb(new))
    end;
    row_now jsonb := coalesce(new_row, old_row);
begin
    if tg_op = 'UPDATE' and old_row = new_row then
        return new;
    end if;
    insert into public.google_ai_audit_records (ts, event, key_alias, model, actor, details)
    values (
        google_ai_internal.clock(),
        'config_changed',
        row_now ->> 'key_alias',
        row_now ->> 'model',
        case
            when pg_catalog.current_setting('role') = 'none' then session_user
            else pg_catalog.current_setting('role')
        end,
        pg_catalog.jsonb_build_object(
            'table', tg_table_name,
            'op', pg_catalog.lower(tg_op),
            'old', old_row,
            'new', new_row
        )
    );
    return coalesce(new, old);
end;
$$;

comment on function google_ai_internal.audit_config_change() is
'Trigger: audits configuration changes as config_changed rows with old and new values.';
revoke all on function google_ai_internal.audit_config_change() from public, anon, authenticated;

create trigger google_ai_api_keys_audit
after insert or update or delete on public.google_ai_api_keys
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_model_limits_audit
after insert or update or delete on public.google_ai_model_limits
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_group_limits_audit
after insert or update or delete on public.google_ai_group_limits
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_settings_audit
after insert or update or delete on public.google_ai_settings
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_caller_classes_audit
after insert or update or delete on public.google_ai_caller_classes
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_caller_policies_audit
after insert or update or delete on public.google_ai_caller_policies
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_caller_budgets_audit
after insert or update or delete on public.google_ai_caller_budgets
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_fallbacks_audit
after insert or update or delete on public.google_ai_fallbacks
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_end_users_audit
after insert or update or delete on public.google_ai_end_users
for each row execute function google_ai_internal.audit_config_change();

-- Flipping the clock switch is a configuration change like any other.
create trigger google_ai_clock_switch_audit
after insert or update or delete on google_ai_internal.clock_switch
for each row execute function google_ai_internal.audit_config_change();

-- last_used_at of a gateway caller moves on every call and is not a config
-- change, so updates that touch only it are not audited (a WHEN clause keeps
-- the audit function itself unchanged).
create trigger google_ai_callers_audit
after insert or delete on public.google_ai_callers
for each row execute function google_ai_internal.audit_config_change();

create trigger google_ai_callers_audit_update
after update on public.google_ai_callers
for each row
when (
    (old.name, old.token_sha256, old.allowed_models, old.active, old.notes)
    is distinct from (new.name, new.token_sha256, new.allowed_models, new.active, new.notes)
)
execute function google_ai_internal.audit_config_change();
