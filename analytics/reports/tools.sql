-- tools: Which tools do runs and responses use, how often do they fail, how long do they take, what do they cost?
--
-- Runs (api 'assistants'): one row per step kind: 'message_creation' for message steps, else each tool
-- type in a tool_calls step (function, code_interpreter, file_search, retrieval). A step calling two tool
-- types counts under both. Step duration is created_at -> completed/failed/cancelled/expired_at.
-- Responses (api 'responses'): one row per tool kind in a response's output (the item type without
-- `_call`: function, web_search, file_search, code_interpreter, ...); `steps` counts the responses that
-- used it, their failed/cancelled counts, codes and durations (created_at -> ended_at) are the response's.
--
-- columns:
--   step_kind          VARCHAR
--   by_value           VARCHAR  the --by value of the step's run or of the response; absent without --by
--   api                VARCHAR  assistants (run steps) | responses
--   steps              BIGINT   run steps, or responses that called the tool
--   calls              BIGINT   tool calls of this type (0 for message_creation)
--   failed_steps       BIGINT
--   cancelled_steps    BIGINT
--   expired_steps      BIGINT
--   failure_codes      VARCHAR  distinct last_error_code values of failed steps
--   duration_p50_s     DOUBLE
--   duration_p95_s     DOUBLE
--   duration_p99_s     DOUBLE
--   sessions           BIGINT   code_interpreter sessions opened
--   tool_usd           DOUBLE   fees for this tool (code_interpreter sessions, file_search/retrieval calls)
-- totals: steps calls failed_steps cancelled_steps expired_steps sessions tool_usd
WITH kinds AS (
    SELECT s.*, r.by_value,
           unnest(CASE WHEN len(s.tool_call_types) = 0 THEN [coalesce(s.type, 'unknown')]
                       ELSE list_distinct(s.tool_call_types) END) AS step_kind
    FROM step_costs s
    LEFT JOIN scoped_runs r ON r.id = s.run_id
), run_rows AS (
SELECT step_kind, by_value, 'assistants' AS api,
       count(*) AS steps,
       CAST(sum(len(list_filter(tool_call_types, t -> t = step_kind))) AS BIGINT) AS calls,
       count(*) FILTER (WHERE status = 'failed') AS failed_steps,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled_steps,
       count(*) FILTER (WHERE status = 'expired') AS expired_steps,
       string_agg(DISTINCT last_error_code, ',' ORDER BY last_error_code) FILTER (WHERE status = 'failed')
           AS failure_codes,
       round(quantile_cont(duration_s, 0.50), 3) AS duration_p50_s,
       round(quantile_cont(duration_s, 0.95), 3) AS duration_p95_s,
       round(quantile_cont(duration_s, 0.99), 3) AS duration_p99_s,
       CAST(sum(CASE WHEN step_kind = 'code_interpreter' THEN code_interpreter_sessions ELSE 0 END) AS BIGINT)
           AS sessions,
       usd(sum(CASE WHEN step_kind = 'code_interpreter' THEN code_interpreter_usd
                    WHEN step_kind IN ('file_search', 'retrieval') THEN file_search_usd ELSE 0 END)) AS tool_usd
FROM kinds
GROUP BY step_kind, by_value
), response_kinds AS (
    SELECT c.*, r.error_code, t.duration_s,
           unnest(list_distinct(list_transform(
               coalesce(json_extract_string(CAST(r.tool_calls AS JSON), '$[*].type'), []::VARCHAR[]),
               k -> regexp_replace(k, '_call$', '')))) AS step_kind,
           coalesce(json_extract_string(CAST(r.tool_calls AS JSON), '$[*].type'), []::VARCHAR[]) AS call_types
    FROM response_costs c
    JOIN scoped_responses r ON r.id = c.response_id
    LEFT JOIN response_timings t ON t.response_id = c.response_id
), response_rows AS (
SELECT step_kind, by_value, 'responses' AS api,
       count(*) AS steps,
       CAST(sum(len(list_filter(call_types, k -> regexp_replace(k, '_call$', '') = step_kind))) AS BIGINT) AS calls,
       count(*) FILTER (WHERE status = 'failed') AS failed_steps,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled_steps,
       CAST(0 AS BIGINT) AS expired_steps,
       string_agg(DISTINCT error_code, ',' ORDER BY error_code) FILTER (WHERE status = 'failed') AS failure_codes,
       round(quantile_cont(duration_s, 0.50), 3) AS duration_p50_s,
       round(quantile_cont(duration_s, 0.95), 3) AS duration_p95_s,
       round(quantile_cont(duration_s, 0.99), 3) AS duration_p99_s,
       CAST(0 AS BIGINT) AS sessions,
       usd(sum(CASE WHEN step_kind = 'file_search' AND file_search_calls + web_search_calls > 0
                    THEN tool_usd * file_search_calls / (file_search_calls + web_search_calls)
                    WHEN step_kind = 'web_search' AND file_search_calls + web_search_calls > 0
                    THEN tool_usd * web_search_calls / (file_search_calls + web_search_calls)
                    ELSE 0 END)) AS tool_usd
FROM response_kinds
GROUP BY step_kind, by_value
)
SELECT * FROM run_rows
UNION ALL BY NAME
SELECT * FROM response_rows
ORDER BY steps DESC, step_kind, by_value NULLS FIRST, api
