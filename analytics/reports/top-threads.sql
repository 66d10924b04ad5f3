-- top-threads: Which threads (and Responses conversations) cost the most?
--
-- The runtap_limit (--limit, default 20) most expensive threads by total_usd, then tokens. A Responses
-- conversation is a thread of api 'responses' (its runs are its responses); responses outside a
-- conversation are not listed.
--
-- columns:
--   thread_id          VARCHAR  a thread id, or a conversation id
--   by_value           VARCHAR  the --by value; absent without --by
--   api                VARCHAR  assistants | responses
--   assistants         VARCHAR  assistant ids that ran on the thread, comma-separated
--   models             VARCHAR  models used, comma-separated
--   runs               BIGINT
--   unpriced_runs      BIGINT   runs whose model has no price (not in the USD columns)
--   total_tokens       BIGINT
--   token_usd          DOUBLE
--   tool_usd           DOUBLE
--   total_usd          DOUBLE
--   first_run_at       TIMESTAMPTZ
--   last_run_at        TIMESTAMPTZ
-- totals: runs unpriced_runs total_tokens token_usd tool_usd total_usd
SELECT conversation_id AS thread_id, by_value, api,
       string_agg(DISTINCT assistant_id, ',' ORDER BY assistant_id) AS assistants,
       string_agg(DISTINCT model, ',' ORDER BY model) AS models,
       count(*) AS runs,
       count(*) FILTER (WHERE NOT priced) AS unpriced_runs,
       CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
       usd(sum(token_usd)) AS token_usd,
       usd(sum(tool_usd)) AS tool_usd,
       usd(sum(total_usd)) AS total_usd,
       min(created_at) AS first_run_at,
       max(created_at) AS last_run_at
FROM agent_costs
WHERE api = 'assistants' OR conversation_id IS NOT NULL
GROUP BY conversation_id, by_value, api
ORDER BY total_usd DESC NULLS LAST, total_tokens DESC, thread_id, api
LIMIT coalesce(CAST(getvariable('runtap_limit') AS BIGINT), 20)
