-- latency: How long do runs and responses queue and run, and how long do apps take to answer tool calls?
--
-- Runs: queue time is created_at -> started_at; duration is started_at -> completed/failed/cancelled_at
-- (or when runtap first saw a final status); tool turnaround is time in requires_action, as runtap
-- observed it (precision is the app's polling interval when it polls). Responses: queue time is
-- queued -> in_progress as observed (background responses); duration is created_at -> ended_at; tool
-- turnaround is a response ending with function calls -> the request answering it via
-- previous_response_id (view response_tool_turnarounds). Seconds; continuous percentiles.
-- The API's timestamps are whole seconds, so runs shorter than a few seconds read 0 or 1 in the
-- duration columns; observed_* measure the same run or response on runtap's clock (first seen -> final
-- status seen, queue time included), in microseconds.
--
-- columns:
--   model                   VARCHAR
--   by_value                VARCHAR  the --by value; absent without --by
--   api                     VARCHAR  assistants (runs) | responses
--   runs                    BIGINT   runs or responses
--   queue_p50_s             DOUBLE
--   queue_p95_s             DOUBLE
--   queue_p99_s             DOUBLE
--   duration_p50_s          DOUBLE
--   duration_p95_s          DOUBLE
--   duration_p99_s          DOUBLE
--   observed_p50_s          DOUBLE   first seen -> final status first seen, by runtap's clock
--   observed_p95_s          DOUBLE
--   observed_p99_s          DOUBLE
--   tool_turnarounds        BIGINT   completed waits for the app's tool outputs
--   tool_turnaround_p50_s   DOUBLE
--   tool_turnaround_p95_s   DOUBLE
--   tool_turnaround_p99_s   DOUBLE
-- totals: runs tool_turnarounds
WITH timings AS (
    SELECT 'assistants' AS api, model, by_value, queue_s, duration_s, observed_s FROM run_timings
    UNION ALL
    SELECT 'responses' AS api, model, by_value, queue_s, duration_s, observed_s FROM response_timings
), turns AS (
    SELECT 'assistants' AS api, model, by_value, seconds FROM tool_turnarounds
    UNION ALL
    SELECT 'responses' AS api, model, by_value, seconds FROM response_tool_turnarounds
), runs_agg AS (
    SELECT api, model, by_value, count(*) AS runs,
           quantile_cont(queue_s, 0.50) AS q50, quantile_cont(queue_s, 0.95) AS q95,
           quantile_cont(queue_s, 0.99) AS q99,
           quantile_cont(duration_s, 0.50) AS d50, quantile_cont(duration_s, 0.95) AS d95,
           quantile_cont(duration_s, 0.99) AS d99,
           quantile_cont(observed_s, 0.50) AS o50, quantile_cont(observed_s, 0.95) AS o95,
           quantile_cont(observed_s, 0.99) AS o99
    FROM timings
    GROUP BY api, model, by_value
), tools_agg AS (
    SELECT api, model, by_value, count(seconds) AS n,
           quantile_cont(seconds, 0.50) AS t50, quantile_cont(seconds, 0.95) AS t95,
           quantile_cont(seconds, 0.99) AS t99
    FROM turns
    GROUP BY api, model, by_value
)
SELECT r.model, r.by_value, r.api, r.runs,
       round(r.q50, 3) AS queue_p50_s, round(r.q95, 3) AS queue_p95_s, round(r.q99, 3) AS queue_p99_s,
       round(r.d50, 3) AS duration_p50_s, round(r.d95, 3) AS duration_p95_s,
       round(r.d99, 3) AS duration_p99_s,
       round(r.o50, 3) AS observed_p50_s, round(r.o95, 3) AS observed_p95_s, round(r.o99, 3) AS observed_p99_s,
       coalesce(t.n, 0) AS tool_turnarounds,
       round(t.t50, 3) AS tool_turnaround_p50_s, round(t.t95, 3) AS tool_turnaround_p95_s,
       round(t.t99, 3) AS tool_turnaround_p99_s
FROM runs_agg r
LEFT JOIN tools_agg t ON t.api = r.api AND t.model IS NOT DISTINCT FROM r.model
      AND t.by_value IS NOT DISTINCT FROM r.by_value
ORDER BY r.model NULLS FIRST, r.by_value NULLS FIRST, r.api
