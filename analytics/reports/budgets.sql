-- budgets: How close do runs and responses come to their token budgets?
--
-- Runs: usage / cap for max_prompt_tokens and max_completion_tokens, the larger of the two when both are
-- set. Responses: output_tokens / max_output_tokens. One row per model, API and budget-use bucket:
-- 'no cap', '< 50%', '50-80%', '80-95%', '95-100%', 'hit cap' (use >= 100%, or the run or response
-- ended incomplete for a max_*_tokens reason). The bucket rows are the headroom distribution.
--
-- columns:
--   model                             VARCHAR
--   by_value                          VARCHAR  the --by value; absent without --by
--   api                               VARCHAR  assistants (runs) | responses
--   budget_use                        VARCHAR  bucket label, in the order above
--   runs                              BIGINT   runs or responses
--   pct_of_model_runs                 DOUBLE   share of the model's runs in this bucket
--   incomplete_max_prompt_tokens      BIGINT   runs that ended incomplete: max_prompt_tokens reached
--   incomplete_max_completion_tokens  BIGINT   runs that ended incomplete: max_completion_tokens reached
--   incomplete_max_output_tokens      BIGINT   responses that ended incomplete: max_output_tokens reached
--   median_headroom_pct               DOUBLE   median of (1 - budget use) x 100 (NULL: no cap)
-- totals: runs incomplete_max_prompt_tokens incomplete_max_completion_tokens incomplete_max_output_tokens
SELECT model, by_value, api, budget_bucket AS budget_use,
       count(*) AS runs,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY model, by_value, api), 2) AS pct_of_model_runs,
       count(*) FILTER (WHERE status = 'incomplete' AND incomplete_reason = 'max_prompt_tokens')
           AS incomplete_max_prompt_tokens,
       count(*) FILTER (WHERE status = 'incomplete' AND incomplete_reason = 'max_completion_tokens')
           AS incomplete_max_completion_tokens,
       count(*) FILTER (WHERE status = 'incomplete' AND incomplete_reason = 'max_output_tokens')
           AS incomplete_max_output_tokens,
       round(100 * median(headroom), 2) AS median_headroom_pct
FROM (SELECT 'assistants' AS api, model, by_value, status, incomplete_reason, headroom, budget_bucket, bucket_order
      FROM run_budgets
      UNION ALL
      SELECT 'responses' AS api, model, by_value, status, incomplete_reason, headroom, budget_bucket, bucket_order
      FROM response_budgets)
GROUP BY model, by_value, api, budget_bucket, bucket_order
ORDER BY model NULLS FIRST, by_value NULLS FIRST, api, bucket_order
