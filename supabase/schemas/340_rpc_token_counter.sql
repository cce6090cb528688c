-- Exact input-token accounting: which counter the client uses before
-- acquire is a column of the model's row (data, not code).

/*
 * token_counter: how the client should count a model's input tokens before
 * acquire, and the model id it sends to the API.
 *
 * Parameters: model, a google_ai_model_limits.model or api_model.
 * Returns one row (api_model, token_counter); token_counter is null when the
 * client chooses automatically.
 * Raises LL001 for an unknown model, LL002 for a null or oversized name.
 * Example: select * from public.token_counter(model => 'gemma-3-27b');
 */
create or replace function public.token_counter(model text)
returns table (api_model text, token_counter text)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    found_row public.google_ai_model_limits;
begin
    if model is null then
        raise exception using
            errcode = 'LL002',
            message = 'model must not be null',
            hint = 'Pass a google_ai_model_limits.model or api_model.';
    end if;
    found_row := google_ai_internal.resolve_model(
        google_ai_internal.check_text('model', model, 200)
    );
    return query select
        coalesce(found_row.api_model, found_row.model),
        found_row.token_counter;
end;
$$;

comment on function public.token_counter(text) is
'The API model id and the input-token counter (gemma3, count_tokens, bytes; null = automatic) the client uses for this model.';
revoke all on function public.token_counter(text) from public, anon, authenticated;
grant execute on function public.token_counter(text) to service_role;
