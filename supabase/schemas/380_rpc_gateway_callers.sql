-- The llm-gateway's callers (050_table_google_ai_callers.sql): register
-- and revoke a caller (operators), identify one by its token's digest (the
-- gateway, on every request).

/*
 * add_caller: register a gateway caller by the SHA-256 of its token.
 *
 * Parameters:
 *   name            1..63 of [A-Za-z0-9._-], starting alphanumeric; it is the
 *                   `caller` in the ledger and the audit log
 *   token_sha256    32 bytes: sha256 of the token's UTF-8 text
 *   allowed_models  model or api_model names; null means every model
 *   notes           free text
 *
 * Returns true when added, false when the name is taken (nothing changes).
 * Audited as config_changed.
 * Raises: LL001 an allowed model is unknown, LL007 bad name, hash or notes.
 * Example: select public.add_caller('kaggle-eval', sha256('tok'::bytea),
 *                                   array['gemma-3-27b'], 'nightly notebook');
 */
create or replace function public.add_caller(
    name text,
    token_sha256 bytea,
    allowed_models text [] default null,
    notes text default null
)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    wanted text;
begin
    if add_caller.name is null or add_caller.name !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' then
        raise exception using errcode = 'LL007',
            message = pg_catalog.format('bad caller name %L',
                                        pg_catalog.left(coalesce(add_caller.name, 'null'), 80)),
            hint = 'Use 1 to 63 letters, digits, dots, dashes or underscores.';
    end if;
    if add_caller.token_sha256 is null or pg_catalog.octet_length(add_caller.token_sha256) <> 32 then
        raise exception using errcode = 'LL007',
            message = 'token_sha256 must be 32 bytes (a SHA-256 digest)',
            hint = 'Hash the token client-side; the token itself never enters the database.';
    end if;
    perform google_ai_internal.check_text('notes', add_caller.notes, 1000);
    foreach wanted in array coalesce(add_caller.allowed_models, '{}') loop
        perform google_ai_internal.resolve_model(wanted);
    end loop;
    insert into public.google_ai_callers as c (name, token_sha256, allowed_models, notes)
    values (add_caller.name, add_caller.token_sha256, add_caller.allowed_models, add_caller.notes)
    on conflict do nothing;
    return found;
end;
$$;

comment on function public.add_caller(text, bytea, text [], text) is
'Register a gateway caller by the SHA-256 of its token. False when the name is taken. Audited.';
revoke all on function public.add_caller(text, bytea, text [], text) from public, anon, authenticated;
grant execute on function public.add_caller(text, bytea, text [], text) to service_role;

/*
 * revoke_caller: refuse a caller's token from now on (the row stays for the
 * audit trail; the next request with that token gets a 401).
 *
 * Parameters: name of the caller.
 * Returns true if it was active, false if already revoked, null if unknown.
 * Audited as config_changed. Raises nothing of its own.
 * Example: select public.revoke_caller('kaggle-eval');
 */
create or replace function public.revoke_caller(name text)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    was_active boolean;
begin
    select c.active into was_active
    from public.google_ai_callers as c
    where c.name = revoke_caller.name
    for update;
    if not found then
        return null;
    end if;
    update public.google_ai_callers as c set active = false
    where c.name = revoke_caller.name and c.active;
    return was_active;
end;
$$;

comment on function public.revoke_caller(text) is
'Revoke a gateway caller: its token is refused from the next request on. Audited.';
revoke all on function public.revoke_caller(text) from public, anon, authenticated;
grant execute on function public.revoke_caller(text) to service_role;

/*
 * identify_caller: the gateway's check of one request's token and model.
 *
 * Parameters:
 *   token_sha256  sha256 of the presented token
 *   model         the model the request names (model or api_model); null
 *                 skips the model check
 *
 * Returns at most one row, only for an active caller: its name, the stored
 * digest (the gateway compares it with its own in constant time), the limits
 * row the model resolves to (null when unknown) and whether the caller may
 * use it. No row: no such active caller. last_used_at is refreshed at most
 * once a minute so a busy caller does not rewrite its row on every call.
 * Raises: LL007 when token_sha256 is not 32 bytes.
 * Example: select * from public.identify_caller(sha256('tok'::bytea), 'gemma-3-27b-it');
 */
create or replace function public.identify_caller(token_sha256 bytea, model text default null)
returns table (
    caller text,
    stored_sha256 bytea,
    resolved_model text,
    model_allowed boolean
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
    found_caller public.google_ai_callers;
    limits public.google_ai_model_limits;
begin
    if identify_caller.token_sha256 is null
       or pg_catalog.octet_length(identify_caller.token_sha256) <> 32 then
        raise exception using errcode = 'LL007',
            message = 'token_sha256 must be 32 bytes (a SHA-256 digest)';
    end if;
    select c.* into found_caller
    from public.google_ai_callers as c
    where c.token_sha256 = identify_caller.token_sha256 and c.active;
    if not found then
        return;
    end if;
    if found_caller.last_used_at is null
       or found_caller.last_used_at < pg_catalog.now() - interval '1 minute' then
        update public.google_ai_callers as c set last_used_at = pg_catalog.now()
        where c.name = found_caller.name;
    end if;
    if identify_caller.model is not null then
        select m.* into limits
        from public.google_ai_model_limits as m
        where m.model = identify_caller.model or m.api_model = identify_caller.model
        order by (m.model = identify_caller.model) desc
        limit 1;
    end if;
    caller := found_caller.name;
    stored_sha256 := found_caller.token_sha256;
    resolved_model := limits.model;
    model_allowed := limits.model is not null and (
        found_caller.allowed_models is null
        or limits.model = any(found_caller.allowed_models)
        or limits.api_model = any(found_caller.allowed_models)
    );
    return next;
end;
$$;

comment on function public.identify_caller(bytea, text) is
'Gateway: the active caller holding a token (by SHA-256), and whether it may use a model.';
revoke all on function public.identify_caller(bytea, text) from public, anon, authenticated;
grant execute on function public.identify_caller(bytea, text) to service_role;
