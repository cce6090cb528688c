"""Test and demo equipment, apart from the thin client (``import llm_limits`` loads none of it).

* ``fake_gemini``: a local Gemini API server that counts tokens with the real vocabulary;
* ``localstack``: a throwaway local Postgres with the Supabase roles, migrated by the Supabase CLI;
* ``pooler``: PgBouncer in transaction mode in front of it;
* ``prose``: deterministic Russian and English text for long prompts;
* ``schemas``: builds a database from ``supabase/schemas`` and compares catalogs object by object.
"""
