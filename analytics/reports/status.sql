-- status: How do runs and responses end, per model, and why do they fail or stop short?
--
-- One row per model, API, status and reason. The reason is the error code for failed runs and responses
-- (server_error, rate_limit_exceeded, invalid_prompt, ...) and incomplete_reason for incomplete ones
-- (max_output_tokens, content_filter, max_completion_tokens...); NULL otherwise. Runs and responses
-- still queued/in_progress/requires_action show under that status.
--
-- columns:
--   model              VARCHAR
--   by_value           VARCHAR  the --by value; absent without --by
--   api                VARCHAR  assistants (runs) | responses
--   status             VARCHAR  latest status runtap saw
--   reason             VARCHAR  failure code or incomplete reason
--   runs               BIGINT   runs or responses with this outcome
--   pct_of_model_runs  DOUBLE   share of the model's runs (or responses)
--   last_seen_at       TIMESTAMPTZ  most recent run created with this outcome
-- totals: runs
SELECT model, by_value, api, status,
       CASE status WHEN 'failed' THEN error_code WHEN 'incomplete' THEN incomplete_reason END AS reason,
       count(*) AS runs,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY model, by_value, api), 2) AS pct_of_model_runs,
       max(created_at) AS last_seen_at
FROM (SELECT model, by_value, 'assistants' AS api, status, last_error_code AS error_code, incomplete_reason,
             created_at
      FROM scoped_runs
      UNION ALL
      SELECT model, by_value, 'responses' AS api, status, error_code, incomplete_reason, created_at
      FROM scoped_responses)
GROUP BY model, by_value, api, status, reason
ORDER BY model NULLS FIRST, by_value NULLS FIRST, api, runs DESC, status, reason NULLS FIRST
