-- The model-name rule of acquire, for the CLI, so it asks the database
-- instead of copying the rule.

/*
 * resolve_model: the google_ai_model_limits.model name that acquire would
 * use for a model name or a Google API id (a row's own name wins over
 * another row's api_model).
 *
 * Parameters: model, a name or an API id.
 * Returns the model name. Raises: LL001 unknown (or null) model.
 * Example: select public.resolve_model('gemma-3-27b-it');
 */
create or replace function public.resolve_model(model text)
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
revoke all on function public.resolve_model(text) from public, anon, authenticated;
grant execute on function public.resolve_model(text) to service_role;
