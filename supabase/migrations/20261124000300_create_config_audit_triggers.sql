-- Every insert/update/delete of keys, limits, overrides and settings writes a
-- `config_changed` audit row with the old and new values, whoever made it
-- (an RPC, the CLI, the Supabase dashboard or plain SQL).

-- SECURITY DEFINER: whoever may change the config (service_role, the CLI's
-- login role) must be able to write the audit row without any privilege on
-- the audit log or on google_ai_internal. The actor recorded is the caller's
-- role, not the definer.
create function google_ai_internal.audit_config_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    old_row jsonb := case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end;
    new_row jsonb := case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end;
    row_now jsonb := coalesce(new_row, old_row);
begin
    if tg_op = 'UPDATE' and old_row = new_row then
        return new;
    end if;
    insert into public.google_ai_audit_log (ts, event, key_alias, model, actor, details)
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

-- Keep updated_at honest without relying on every writer to set it.
create function google_ai_internal.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at := pg_catalog.now();
    return new;
end;
$$;

revoke all on function google_ai_internal.touch_updated_at() from public, anon, authenticated;

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
