-- Taking a key out of the pool and putting it back. disable_key is settle's
-- (Google said the key is invalid or leaked) and an operator's; enable_key is
-- an operator's decision. Both audit why, inline, besides the config_changed
-- record of the table trigger.

/*
 * disable_key: take a key out of the pool (Google said API_KEY_INVALID, or
 * that the key leaked). Audited twice: `key_disabled` with the reason, and
 * `config_changed` by the table trigger.
 * Returns true when the key was active. Raises: LL009 unknown key, LL007.
 * Example: select public.disable_key('kaggle-2', 'API_KEY_INVALID');
 */
create or replace function public.disable_key(key_alias text, reason text default null)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    was_active boolean;
begin
    perform google_ai_internal.check_text('reason', reason, 500);
    select k.is_active is true into was_active
    from public.google_ai_api_keys as k
    where k.key_alias = disable_key.key_alias
    for update;
    if not found then
        raise exception using errcode = 'LL009',
            message = pg_catalog.format('unknown key %L', pg_catalog.left(key_alias, 200)),
            hint = 'See the aliases in public.google_ai_api_keys.';
    end if;
    update public.google_ai_api_keys as k
    set is_active = false, disabled_reason = coalesce(reason, 'disabled')
    where k.key_alias = disable_key.key_alias;
    insert into public.google_ai_audit_records (ts, event, key_alias, details)
    values (google_ai_internal.clock(), 'key_disabled', disable_key.key_alias,
            pg_catalog.jsonb_build_object('reason', reason, 'was_active', was_active));
    return was_active;
end;
$$;

comment on function public.disable_key(text, text) is
'Mark a key inactive (invalid or leaked) and audit why.';
revoke all on function public.disable_key(text, text) from public, anon, authenticated;
grant execute on function public.disable_key(text, text) to service_role;

/*
 * enable_key: put a key back into the pool (after disable_key, or a key
 * added inactive). Audited twice, like disable_key: `key_enabled` with the
 * reason, and `config_changed` by the table trigger.
 *
 * Parameters: key_alias; reason, for the audit log (at most 500 characters).
 * Returns true when the key was inactive (this call enabled it), false when
 * it was already active. Raises: LL009 unknown key, LL007 reason too long.
 * Example: select public.enable_key('kaggle-2', 'key rotated');
 */
create or replace function public.enable_key(key_alias text, reason text default null)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    was_active boolean;
begin
    perform google_ai_internal.check_text('reason', reason, 500);
    select k.is_active is true into was_active
    from public.google_ai_api_keys as k
    where k.key_alias = enable_key.key_alias
    for update;
    if not found then
        raise exception using errcode = 'LL009',
            message = pg_catalog.format('unknown key %L', pg_catalog.left(key_alias, 200)),
            hint = 'See the aliases in public.google_ai_api_keys.';
    end if;
    update public.google_ai_api_keys as k
    set is_active = true, disabled_reason = null
    where k.key_alias = enable_key.key_alias;
    insert into public.google_ai_audit_records (ts, event, key_alias, details)
    values (google_ai_internal.clock(), 'key_enabled', enable_key.key_alias,
            pg_catalog.jsonb_build_object('reason', reason, 'was_active', was_active));
    return not was_active;
end;
$$;

comment on function public.enable_key(text, text) is
'Put a key back into the pool (the counterpart of disable_key) and audit why.';
revoke all on function public.enable_key(text, text) from public, anon, authenticated;
grant execute on function public.enable_key(text, text) to service_role;
