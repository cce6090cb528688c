-- resolve_model names the limits row acquire would use: by its own name, by
-- its API id, and a row's own name wins over another row's API id.
begin;
select plan(5);

insert into public.google_ai_model_limits (model, api_model, rpm, tpm, rpd)
values
('rm-model', 'rm-model-api', 10, 1000, 100),
('rm-other', 'rm-model', 10, 1000, 100);

select is(public.resolve_model('rm-model-api'), 'rm-model', 'an API id resolves to its row');
select is(public.resolve_model('rm-other'), 'rm-other', 'a row name resolves to itself');
select is(
    public.resolve_model('rm-model'), 'rm-model',
    'a row''s own name wins over another row''s API id'
);
select throws_ok(
    $$select public.resolve_model('no-such-model')$$, 'LL001', null, 'an unknown model raises LL001'
);
select throws_ok(
    $$select public.resolve_model(null)$$, 'LL001', null, 'a null model raises LL001'
);

select * from finish();
rollback;
