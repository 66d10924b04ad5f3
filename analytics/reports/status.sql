-- status: How do runs end, per model, and why do they fail or stop short?
--
-- One row per model, status and reason. The reason is last_error_code for failed runs (server_error,
-- rate_limit_exceeded, invalid_prompt, ...) and incomplete_reason for incomplete ones; NULL otherwise.
-- Runs still queued/in_progress/requires_action show under that status.
--
-- columns:
--   model              VARCHAR
--   by_value           VARCHAR  the --by value; absent without --by
--   status             VARCHAR  latest status runtap saw
--   reason             VARCHAR  failure code or incomplete reason
--   runs               BIGINT
--   pct_of_model_runs  DOUBLE   share of the model's runs
--   last_seen_at       TIMESTAMPTZ  most recent run created with this outcome
-- totals: runs
SELECT model, by_value, status,
       CASE status WHEN 'failed' THEN last_error_code WHEN 'incomplete' THEN incomplete_reason END AS reason,
       count(*) AS runs,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY model, by_value), 2) AS pct_of_model_runs,
       max(created_at) AS last_seen_at
FROM scoped_runs
GROUP BY model, by_value, status, reason
ORDER BY model NULLS FIRST, by_value NULLS FIRST, runs DESC, status, reason NULLS FIRST
