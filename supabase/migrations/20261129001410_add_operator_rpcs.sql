-- Operator RPCs that let the CLI ask the database instead of copying its
-- rules: enable_key (the counterpart of disable_key, audited as key_enabled),
-- audit_event_kinds (the events the audit stream can hold, read from the
-- check constraint that defines them) and resolve_model (the model-name rule
-- of acquire). service_role only: re-enabling a key is an operator's
-- decision, so llm_limits_client, which may disable a key it finds invalid,
-- may not put one back.

-- The event list lives in this constraint and nowhere else; audit_event_kinds
-- reads it back. NOT VALID, then VALIDATE: the old rows are checked without
-- blocking writers.
alter table public.google_ai_audit_records
drop constraint google_ai_audit_records_event_check,
add constraint google_ai_audit_records_event_check check (
    event in (
        'granted', 'refused', 'committed', 'released', 'rate_limited',
        'expired', 'config_changed', 'key_disabled', 'key_enabled'
    )
) not valid;
alter table public.google_ai_audit_records
validate constraint google_ai_audit_records_event_check;

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
create function public.enable_key(key_alias text, reason text default null)
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

/*
 * audit_event_kinds: the event names google_ai_audit_log can show, in the
 * order of google_ai_audit_records' event check, which defines them (the
 * view's other sources, the ledger and the folded refusals, produce a subset
 * of them).
 *
 * Returns one row per event name. Raises nothing.
 * Example: select * from public.audit_event_kinds();
 */
create function public.audit_event_kinds()
returns setof text
language sql
stable
security definer
set search_path = ''
as $$
    select m.kind[1]
    from pg_catalog.pg_constraint as c
    cross join lateral pg_catalog.regexp_matches(
        pg_catalog.pg_get_constraintdef(c.oid), '''([a-z_]+)''', 'g'
    ) with ordinality as m (kind, n)
    where
        c.conrelid = 'public.google_ai_audit_records'::regclass
        and c.conname = 'google_ai_audit_records_event_check'
    order by m.n
$$;

comment on function public.audit_event_kinds() is
'The event names the audit stream (google_ai_audit_log) can hold, as its check constraint defines them.';

/*
 * resolve_model: the google_ai_model_limits.model name that acquire would
 * use for a model name or a Google API id (a row's own name wins over
 * another row's api_model).
 *
 * Parameters: model, a name or an API id.
 * Returns the model name. Raises: LL001 unknown (or null) model.
 * Example: select public.resolve_model('gemma-3-27b-it');
 */
create function public.resolve_model(model text)
returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return (google_ai_internal.resolve_model(resolve_model.model)).model;
end;
$$;

comment on function public.resolve_model(text) is
'The google_ai_model_limits.model name of a model name or API id, as acquire resolves it; LL001 if unknown.';

revoke all on function public.enable_key(text, text) from public, anon, authenticated;
revoke all on function public.audit_event_kinds() from public, anon, authenticated;
revoke all on function public.resolve_model(text) from public, anon, authenticated;
grant execute on function public.enable_key(text, text) to service_role;
grant execute on function public.audit_event_kinds() to service_role;
grant execute on function public.resolve_model(text) to service_role;
