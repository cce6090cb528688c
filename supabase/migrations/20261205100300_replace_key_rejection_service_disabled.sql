-- settle disables a key whose project has the Generative Language API disabled
-- (403 ErrorInfo SERVICE_DISABLED): no model can answer on it. Any other 403 still
-- leaves the key to the other models.

/*
 * key_rejection: why Google refuses the key itself, or null when the error
 * is about something else (a 403 for one model's access, a bad request). A
 * 403 "reported as leaked" is API_KEY_LEAKED; a 400 or 403 whose ErrorInfo
 * reason is API_KEY_... (API_KEY_INVALID, API_KEY_SERVICE_BLOCKED, ...) is
 * that reason; a 403 SERVICE_DISABLED (the Generative Language API is off in
 * the key's project) is SERVICE_DISABLED; a 400 "API key not valid" without
 * ErrorInfo is API_KEY_INVALID. No call on such a key can succeed, for any
 * model.
 *
 * Parameters: p_status, the HTTP status; p_error, google_error()'s result.
 * Returns the reason, or null. Raises nothing.
 * Example: select google_ai_internal.key_rejection(403, '{"message": "... leaked"}');
 */
create or replace function google_ai_internal.key_rejection(p_status integer, p_error jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
    select case
        when p_status = 403 and p_error ->> 'message' ilike '%reported as leaked%'
            then 'API_KEY_LEAKED'
        when p_status in (400, 403) then coalesce(
            (
                select i.info ->> 'reason'
                from google_ai_internal.error_details(p_error, 'ErrorInfo') as i (info)
                where
                    i.info ->> 'reason' like 'API\_KEY\_%'
                    or (p_status = 403 and i.info ->> 'reason' = 'SERVICE_DISABLED')
                limit 1
            ),
            case when p_error ->> 'message' ilike '%api key not valid%' then 'API_KEY_INVALID' end
        )
    end
$$;

revoke all on function google_ai_internal.key_rejection(integer, jsonb)
from public, anon, authenticated;
