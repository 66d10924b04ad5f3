-- top-assistants: Which assistants cost the most, and what share of the spend is theirs?
--
-- The runtap_limit (--limit, default 20) most expensive assistants by total_usd, then tokens.
--
-- columns:
--   assistant_id       VARCHAR
--   by_value           VARCHAR  the --by value; absent without --by
--   models             VARCHAR  models used, comma-separated
--   runs               BIGINT
--   threads            BIGINT   distinct threads
--   unpriced_runs      BIGINT   runs whose model has no price (not in the USD columns)
--   total_tokens       BIGINT
--   token_usd          DOUBLE
--   tool_usd           DOUBLE
--   total_usd          DOUBLE
--   cost_share_pct     DOUBLE   this row's total_usd as a percentage of all runs in scope
-- totals: runs unpriced_runs total_tokens token_usd tool_usd total_usd cost_share_pct
SELECT assistant_id, by_value,
       string_agg(DISTINCT model, ',' ORDER BY model) AS models,
       count(*) AS runs,
       count(DISTINCT thread_id) AS threads,
       count(*) FILTER (WHERE NOT priced) AS unpriced_runs,
       CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
       usd(sum(token_usd)) AS token_usd,
       usd(sum(tool_usd)) AS tool_usd,
       usd(sum(total_usd)) AS total_usd,
       CAST(round(100 * sum(total_usd) / nullif(sum(sum(total_usd)) OVER (), 0), 2) AS DOUBLE) AS cost_share_pct
FROM run_costs
GROUP BY assistant_id, by_value
ORDER BY total_usd DESC NULLS LAST, total_tokens DESC, assistant_id
LIMIT coalesce(CAST(getvariable('runtap_limit') AS BIGINT), 20)
