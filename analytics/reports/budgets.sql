-- budgets: How close do runs come to their token budgets (max_prompt_tokens / max_completion_tokens)?
--
-- Budget use = usage / cap, the larger of the two when both are set. One row per model and budget-use
-- bucket: 'no cap', '< 50%', '50-80%', '80-95%', '95-100%', 'hit cap' (use >= 100%, or the run ended
-- incomplete for a max_*_tokens reason). The bucket rows are the headroom distribution.
--
-- columns:
--   model                             VARCHAR
--   by_value                          VARCHAR  the --by value; absent without --by
--   budget_use                        VARCHAR  bucket label, in the order above
--   runs                              BIGINT
--   pct_of_model_runs                 DOUBLE   share of the model's runs in this bucket
--   incomplete_max_prompt_tokens      BIGINT   runs that ended incomplete: max_prompt_tokens reached
--   incomplete_max_completion_tokens  BIGINT   runs that ended incomplete: max_completion_tokens reached
--   median_headroom_pct               DOUBLE   median of (1 - budget use) x 100 (NULL: no cap)
-- totals: runs incomplete_max_prompt_tokens incomplete_max_completion_tokens
SELECT model, by_value, budget_bucket AS budget_use,
       count(*) AS runs,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY model, by_value), 2) AS pct_of_model_runs,
       count(*) FILTER (WHERE status = 'incomplete' AND incomplete_reason = 'max_prompt_tokens')
           AS incomplete_max_prompt_tokens,
       count(*) FILTER (WHERE status = 'incomplete' AND incomplete_reason = 'max_completion_tokens')
           AS incomplete_max_completion_tokens,
       round(100 * median(headroom), 2) AS median_headroom_pct
FROM run_budgets
GROUP BY model, by_value, budget_bucket, bucket_order
ORDER BY model NULLS FIRST, by_value NULLS FIRST, bucket_order
