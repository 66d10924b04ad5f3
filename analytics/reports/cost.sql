-- cost: What did runs cost per UTC day, model and assistant?
--
-- Token cost is run usage x the price book (analytics/prices.csv, overridden by --prices); tool fees are
-- code_interpreter sessions and file_search/retrieval calls from the runs' steps. A run whose model has
-- no price counts in `runs` and `unpriced_runs` but adds nothing to token_usd/total_usd (see `unpriced`).
--
-- columns:
--   day                DATE     UTC day the run was created
--   by_value           VARCHAR  the --by value (metadata.KEY or key_fingerprint); absent without --by
--   model              VARCHAR  run model as the API reported it
--   assistant_id       VARCHAR
--   runs               BIGINT   runs created that day
--   unpriced_runs      BIGINT   of those, runs whose model has no price
--   prompt_tokens      BIGINT
--   completion_tokens  BIGINT
--   total_tokens       BIGINT
--   token_usd          DOUBLE   prompt and completion tokens at the model's price (NULL: nothing priced)
--   tool_usd           DOUBLE   code_interpreter sessions + file_search/retrieval calls
--   total_usd          DOUBLE   token_usd + tool_usd of the priced runs
-- totals: runs unpriced_runs prompt_tokens completion_tokens total_tokens token_usd tool_usd total_usd
SELECT day, by_value, model, assistant_id,
       count(*) AS runs,
       count(*) FILTER (WHERE NOT priced) AS unpriced_runs,
       CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
       CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
       CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
       usd(sum(token_usd)) AS token_usd,
       usd(sum(tool_usd)) AS tool_usd,
       usd(sum(total_usd)) AS total_usd
FROM run_costs
GROUP BY day, by_value, model, assistant_id
ORDER BY day, by_value NULLS FIRST, model NULLS FIRST, assistant_id NULLS FIRST
