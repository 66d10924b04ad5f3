-- runtap report views: every report in analytics/reports/ reads these, never the tables directly.
--
-- Needs: the capture tables (runs, run_steps, run_events, responses, response_events, requests;
-- analytics/schema.sql, or the lake's views of them) and table price_book (analytics/prices.py). `runtap sql --setup` prints a script that
-- creates both, to paste into the DuckDB CLI or any SQL client.
--
-- Everything is TEMP, so the views also work on a read-only connection and never change the capture
-- file. Report parameters are DuckDB variables, NULL when unset:
--   SET VARIABLE runtap_since = TIMESTAMPTZ '2024-06-01';   -- runs/steps created at or after
--   SET VARIABLE runtap_until = TIMESTAMPTZ '2024-07-01';   -- ... and before
--   SET VARIABLE runtap_by    = 'metadata.tenant';          -- or 'key_fingerprint'
--   SET VARIABLE runtap_limit = 20;                         -- rows of the top-* reports
-- Days are UTC days.

-- Money is DECIMAL, exact: tokens x USD-per-1M x 10^-6 never rounds, and sums do not depend on order.
--   per_million(tokens, usd_per_1m)  DECIMAL(38,14)  USD for that many tokens
--   usd(x)                           DOUBLE          x rounded to the micro-dollar, for report output
CREATE OR REPLACE TEMP MACRO per_million(tokens, usd_per_1m) AS
    CAST(tokens AS BIGINT) * usd_per_1m * CAST(0.000001 AS DECIMAL(7, 6));
CREATE OR REPLACE TEMP MACRO usd(x) AS CAST(round(x, 6) AS DOUBLE);
-- UTC day and hour by arithmetic: no time-zone lookup per row, whatever the session's TimeZone
CREATE OR REPLACE TEMP MACRO utc_day(ts) AS DATE '1970-01-01' + CAST(floor(epoch(ts) / 86400) AS INTEGER);
CREATE OR REPLACE TEMP MACRO utc_hour(ts) AS CAST(floor(epoch(ts) / 3600) AS BIGINT);
-- How much of its cap a run or response used, as the budgets report's buckets (and their sort order).
CREATE OR REPLACE TEMP MACRO budget_bucket(hit_cap, budget_use) AS
    CASE WHEN hit_cap THEN 'hit cap' WHEN budget_use IS NULL THEN 'no cap'
         WHEN budget_use < 0.5 THEN '< 50%' WHEN budget_use < 0.8 THEN '50-80%'
         WHEN budget_use < 0.95 THEN '80-95%' ELSE '95-100%' END;
CREATE OR REPLACE TEMP MACRO budget_bucket_order(hit_cap, budget_use) AS
    CASE WHEN hit_cap THEN 5 WHEN budget_use IS NULL THEN 0 WHEN budget_use < 0.5 THEN 1
         WHEN budget_use < 0.8 THEN 2 WHEN budget_use < 0.95 THEN 3 ELSE 4 END;

-- scoped_runs: runs created in [runtap_since, runtap_until), every column of `runs`, plus
--   day           DATE     UTC day of created_at
--   by_value      VARCHAR  value of the runtap_by key for this run (NULL when runtap_by is unset)
CREATE OR REPLACE TEMP VIEW scoped_runs AS
SELECT r.*,
       utc_day(r.created_at) AS day,
       CASE
           WHEN getvariable('runtap_by') IS NULL THEN NULL
           WHEN getvariable('runtap_by') = 'key_fingerprint' THEN r.key_fingerprint
           -- provider:version, e.g. 'azure:v1' or 'openai:v2'; rows written before runs had api_provider
           -- got their version only from OpenAI-Beta, so a version without a provider is OpenAI's
           WHEN getvariable('runtap_by') = 'api_version' THEN
               CASE WHEN r.api_provider IS NULL AND r.api_version IS NULL THEN NULL
                    ELSE coalesce(r.api_provider, 'openai') || ':' || coalesce(r.api_version, '') END
           WHEN getvariable('runtap_by') = 'conversation' THEN r.thread_id
           WHEN getvariable('runtap_by') = 'api' THEN 'assistants'
           WHEN getvariable('runtap_by') LIKE 'metadata._%'
               THEN CAST(r.metadata AS JSON) ->> substr(getvariable('runtap_by'), 10)
           ELSE error('runtap_by must be metadata.KEY, key_fingerprint, api_version, conversation or api, got '
                      || getvariable('runtap_by'))
       END AS by_value
FROM runs r
WHERE r.created_at >= coalesce(CAST(getvariable('runtap_since') AS TIMESTAMPTZ), '-infinity'::TIMESTAMPTZ)
  AND r.created_at < coalesce(CAST(getvariable('runtap_until') AS TIMESTAMPTZ), 'infinity'::TIMESTAMPTZ);

-- scoped_responses: responses (Responses API) created in [runtap_since, runtap_until), every column of
-- `responses`, plus day and by_value as in scoped_runs (conversation: conversation_id; api: 'responses';
-- api_version: provider:version of the Responses API the client called)
CREATE OR REPLACE TEMP VIEW scoped_responses AS
SELECT r.*,
       utc_day(r.created_at) AS day,
       CASE
           WHEN getvariable('runtap_by') IS NULL THEN NULL
           WHEN getvariable('runtap_by') = 'key_fingerprint' THEN r.key_fingerprint
           WHEN getvariable('runtap_by') = 'conversation' THEN r.conversation_id
           WHEN getvariable('runtap_by') = 'api' THEN 'responses'
           -- provider:version as for runs: 'openai:v1' (/v1/responses), 'azure:v1' (/openai/v1/responses),
           -- 'azure:2025-04-01-preview' (an api-version query); analytics/ingest/response_versions.py
           WHEN getvariable('runtap_by') = 'api_version' THEN
               CASE WHEN r.api_provider IS NULL AND r.api_version IS NULL THEN NULL
                    ELSE coalesce(r.api_provider, 'openai') || ':' || coalesce(r.api_version, '') END
           WHEN getvariable('runtap_by') LIKE 'metadata._%'
               THEN CAST(r.metadata AS JSON) ->> substr(getvariable('runtap_by'), 10)
           ELSE error('runtap_by must be metadata.KEY, key_fingerprint, api_version, conversation or api, got '
                      || getvariable('runtap_by'))
       END AS by_value
FROM responses r
WHERE r.created_at >= coalesce(CAST(getvariable('runtap_since') AS TIMESTAMPTZ), '-infinity'::TIMESTAMPTZ)
  AND r.created_at < coalesce(CAST(getvariable('runtap_until') AS TIMESTAMPTZ), 'infinity'::TIMESTAMPTZ);

-- price_periods: the price book as validity intervals, one row per price_book row
--   key           VARCHAR  lower-cased name, the match key
--   name, kind, effective_from, unit, source
--   prompt_usd_per_1m, completion_usd_per_1m, unit_usd, cached_prompt_usd_per_1m  DECIMAL(18,8)
--   valid_from    DATE     effective_from; -infinity for a name's first row (it also prices earlier runs)
--   valid_to      DATE     the next row's effective_from for the same name; infinity for the last
CREATE OR REPLACE TEMP VIEW price_periods AS
SELECT lower(name) AS key, name, kind, effective_from,
       CAST(prompt_usd_per_1m AS DECIMAL(18, 8)) AS prompt_usd_per_1m,
       CAST(completion_usd_per_1m AS DECIMAL(18, 8)) AS completion_usd_per_1m,
       CAST(unit_usd AS DECIMAL(18, 8)) AS unit_usd, unit, source,
       CAST(cached_prompt_usd_per_1m AS DECIMAL(18, 8)) AS cached_prompt_usd_per_1m,
       CASE WHEN row_number() OVER w = 1 THEN '-infinity'::DATE ELSE effective_from END AS valid_from,
       coalesce(lead(effective_from) OVER w, 'infinity'::DATE) AS valid_to
FROM price_book
WINDOW w AS (PARTITION BY lower(name), kind ORDER BY effective_from);

-- run_prices: which price applies to each model on each day it ran (the rule in analytics/prices.py),
-- for runs and responses alike
--   model         VARCHAR  run or response model as captured
--   day           DATE     UTC day
--   price_rule    VARCHAR  'exact', 'snapshot', or NULL when unpriced
--   price_name    VARCHAR  price-book name that matched (the base model for a snapshot)
--   price_date    DATE     date the price was looked up at: the day, or the snapshot's date
--   effective_from DATE    effective_from of the row that applied
--   prompt_usd_per_1m, completion_usd_per_1m, cached_prompt_usd_per_1m DECIMAL(18,8)
CREATE OR REPLACE TEMP VIEW run_prices AS
WITH pairs AS (
    SELECT DISTINCT model, day FROM scoped_runs
    UNION
    SELECT DISTINCT model, day FROM scoped_responses
), keyed AS (
    SELECT model, day,
           lower(model) AS exact_key,
           lower(regexp_extract(model, '^(.+)-(\d{4}-\d{2}-\d{2})$', 1)) AS base_key,
           CAST(try_strptime(regexp_extract(model, '^(.+)-(\d{4}-\d{2}-\d{2})$', 2), '%Y-%m-%d') AS DATE)
               AS snapshot_date
    FROM pairs
), matched AS (
    SELECT k.model, k.day,
           CASE WHEN e.key IS NOT NULL THEN 'exact' WHEN b.key IS NOT NULL THEN 'snapshot' END AS price_rule,
           coalesce(e.name, b.name) AS price_name,
           CASE WHEN e.key IS NOT NULL THEN k.day WHEN b.key IS NOT NULL THEN k.snapshot_date END AS price_date,
           coalesce(e.effective_from, b.effective_from) AS effective_from,
           coalesce(e.prompt_usd_per_1m, b.prompt_usd_per_1m) AS prompt_usd_per_1m,
           coalesce(e.completion_usd_per_1m, b.completion_usd_per_1m) AS completion_usd_per_1m,
           CASE WHEN e.key IS NOT NULL THEN e.cached_prompt_usd_per_1m ELSE b.cached_prompt_usd_per_1m END
               AS cached_prompt_usd_per_1m
    FROM keyed k
    LEFT JOIN price_periods e
           ON e.kind = 'model' AND e.key = k.exact_key AND k.day >= e.valid_from AND k.day < e.valid_to
    LEFT JOIN price_periods b
           ON e.key IS NULL AND b.kind = 'model' AND b.key = k.base_key AND k.snapshot_date IS NOT NULL
          AND k.snapshot_date >= b.valid_from AND k.snapshot_date < b.valid_to
)
SELECT * FROM matched;

-- step_costs: one row per run step created in [runtap_since, runtap_until), with its tool calls and fees
--   step_id, run_id, thread_id, assistant_id, type, status, created_at, completed_at, last_error_code
--   day                        DATE     UTC day the step was created
--   duration_s                 DOUBLE   created_at to completed/failed/cancelled/expired_at
--   tool_call_types            VARCHAR[] type of each tool call, one entry per call (tool_calls steps)
--   function_calls, code_interpreter_calls, file_search_calls, retrieval_calls  INTEGER
--   code_interpreter_sessions  INTEGER  1 when this step opens a session: the first code_interpreter step
--                                       of its thread in a UTC clock hour (sessions last up to an hour)
--   code_interpreter_usd       DECIMAL  sessions x code_interpreter unit_usd
--   file_search_usd            DECIMAL  (file_search_calls x its unit_usd) + (retrieval_calls x its unit_usd)
--   tool_usd                   DECIMAL  code_interpreter_usd + file_search_usd (0 with no priced tool use)
CREATE OR REPLACE TEMP VIEW step_costs AS
WITH s AS (
    SELECT s.id AS step_id, s.run_id, s.thread_id, s.assistant_id, s.type, s.status, s.created_at,
           s.completed_at, s.last_error_code,
           utc_day(s.created_at) AS day,
           epoch(coalesce(s.completed_at, s.failed_at, s.cancelled_at, s.expired_at))
               - epoch(s.created_at) AS duration_s,
           coalesce(json_extract_string(CAST(s.step_details AS JSON), '$.tool_calls[*].type'),
                    []::VARCHAR[]) AS tool_call_types
    FROM run_steps s
    WHERE s.created_at >= coalesce(CAST(getvariable('runtap_since') AS TIMESTAMPTZ), '-infinity'::TIMESTAMPTZ)
      AND s.created_at < coalesce(CAST(getvariable('runtap_until') AS TIMESTAMPTZ), 'infinity'::TIMESTAMPTZ)
), counted AS (
    SELECT *,
           len(list_filter(tool_call_types, t -> t = 'function')) AS function_calls,
           len(list_filter(tool_call_types, t -> t = 'code_interpreter')) AS code_interpreter_calls,
           len(list_filter(tool_call_types, t -> t = 'file_search')) AS file_search_calls,
           len(list_filter(tool_call_types, t -> t = 'retrieval')) AS retrieval_calls
    FROM s
), openers AS (
    -- the step that opened each code_interpreter session: first call of a thread in a UTC hour
    SELECT arg_min(step_id, (created_at, step_id)) AS step_id
    FROM counted
    WHERE code_interpreter_calls > 0
    GROUP BY thread_id, utc_hour(created_at)
), sessions AS (
    SELECT c.*, CASE WHEN o.step_id IS NULL THEN 0 ELSE 1 END AS code_interpreter_sessions
    FROM counted c
    LEFT JOIN openers o ON o.step_id = c.step_id
), fees AS (
    -- tool prices per day: a range join over a few dozen days, then an equi-join per step
    SELECT d.day, coalesce(ci.unit_usd, 0) AS ci_usd, coalesce(fs.unit_usd, 0) AS fs_usd,
           coalesce(rt.unit_usd, 0) AS rt_usd
    FROM (SELECT DISTINCT day FROM s) d
    LEFT JOIN price_periods ci ON ci.kind = 'tool' AND ci.key = 'code_interpreter'
          AND d.day >= ci.valid_from AND d.day < ci.valid_to
    LEFT JOIN price_periods fs ON fs.kind = 'tool' AND fs.key = 'file_search'
          AND d.day >= fs.valid_from AND d.day < fs.valid_to
    LEFT JOIN price_periods rt ON rt.kind = 'tool' AND rt.key = 'retrieval'
          AND d.day >= rt.valid_from AND d.day < rt.valid_to
)
SELECT x.*,
       CAST(x.code_interpreter_sessions AS BIGINT) * f.ci_usd AS code_interpreter_usd,
       CAST(x.file_search_calls AS BIGINT) * f.fs_usd + CAST(x.retrieval_calls AS BIGINT) * f.rt_usd
           AS file_search_usd,
       code_interpreter_usd + file_search_usd AS tool_usd
FROM sessions x
LEFT JOIN fees f ON f.day IS NOT DISTINCT FROM x.day;

-- run_costs: one row per run in scope, with its token and tool cost lines
--   run_id, thread_id, assistant_id, model, status, created_at, day, by_value, key_fingerprint,
--   metadata, api_version
--   prompt_tokens, completion_tokens, total_tokens  BIGINT  run usage (0 while unknown)
--   priced                     BOOLEAN  the model has a price (else the token and total USD are NULL)
--   price_rule, price_name, effective_from, prompt_usd_per_1m, completion_usd_per_1m  (from run_prices)
--   prompt_usd, completion_usd, token_usd   DECIMAL  NULL when unpriced, never a silent 0
--   code_interpreter_sessions, file_search_calls (file_search + retrieval)  BIGINT  from the run's steps
--   code_interpreter_usd, file_search_usd, tool_usd  DECIMAL  tool fees (priced even when the model is not)
--   total_usd                  DECIMAL  token_usd + tool_usd; NULL when unpriced
CREATE OR REPLACE TEMP VIEW run_costs AS
WITH tools AS (
    SELECT run_id,
           sum(code_interpreter_sessions) AS code_interpreter_sessions,
           sum(file_search_calls + retrieval_calls) AS file_search_calls,
           sum(code_interpreter_usd) AS code_interpreter_usd,
           sum(file_search_usd) AS file_search_usd,
           sum(tool_usd) AS tool_usd
    FROM step_costs
    GROUP BY run_id
), base AS (
    SELECT r.id AS run_id, r.thread_id, r.assistant_id, r.model, r.status, r.created_at, r.day, r.by_value,
           r.key_fingerprint, r.metadata, r.api_version,
           coalesce(r.prompt_tokens, 0) AS prompt_tokens,
           coalesce(r.completion_tokens, 0) AS completion_tokens,
           coalesce(r.total_tokens, coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0))
               AS total_tokens,
           p.price_rule IS NOT NULL AS priced,
           p.price_rule, p.price_name, p.effective_from, p.prompt_usd_per_1m, p.completion_usd_per_1m,
           coalesce(t.code_interpreter_sessions, 0) AS code_interpreter_sessions,
           coalesce(t.file_search_calls, 0) AS file_search_calls,
           coalesce(t.code_interpreter_usd, 0) AS code_interpreter_usd,
           coalesce(t.file_search_usd, 0) AS file_search_usd,
           coalesce(t.tool_usd, 0) AS tool_usd
    FROM scoped_runs r
    LEFT JOIN run_prices p ON p.model IS NOT DISTINCT FROM r.model AND p.day = r.day
    LEFT JOIN tools t ON t.run_id = r.id
)
SELECT * EXCLUDE (tool_usd),
       per_million(prompt_tokens, prompt_usd_per_1m) AS prompt_usd,
       per_million(completion_tokens, completion_usd_per_1m) AS completion_usd,
       prompt_usd + completion_usd AS token_usd,
       tool_usd,
       token_usd + tool_usd AS total_usd
FROM base;

-- tool_turnarounds: each time a run waited for the app's tool outputs, as observed by runtap
--   run_id, model, by_value
--   began_at      TIMESTAMPTZ  the run was first seen in requires_action
--   ended_at      TIMESTAMPTZ  the next status runtap saw (NULL while still waiting)
--   seconds       DOUBLE       ended_at - began_at
CREATE OR REPLACE TEMP VIEW tool_turnarounds AS
WITH ev AS (
    SELECT e.run_id, e.observed_at, e.to_status,
           lead(e.observed_at) OVER (PARTITION BY e.run_id ORDER BY e.observed_at) AS next_at,
           lag(e.to_status) OVER (PARTITION BY e.run_id ORDER BY e.observed_at) AS prev_status
    FROM run_events e
    WHERE e.run_id IN (SELECT id FROM scoped_runs)
)
SELECT ev.run_id, r.model, r.by_value, ev.observed_at AS began_at, ev.next_at AS ended_at,
       epoch(ev.next_at) - epoch(ev.observed_at) AS seconds
FROM ev
JOIN scoped_runs r ON r.id = ev.run_id
WHERE ev.to_status = 'requires_action' AND ev.prev_status IS DISTINCT FROM 'requires_action';

-- run_timings: one row per run in scope (time waiting for tool outputs: tool_turnarounds)
--   run_id, model, assistant_id, status, day, by_value
--   queue_s          DOUBLE  created_at -> started_at (NULL until started)
--   ended_at         TIMESTAMPTZ  runs.ended_at: completed/failed/cancelled/expires_at of the final
--                             status, else when runtap first saw it (NULL while the run is live)
--   duration_s       DOUBLE  started_at -> ended_at (NULL until it ends, or if never started)
--   observed_s       DOUBLE  runtap's own clock: the run first seen -> its final status first seen
--                             (NULL while live). The API's timestamps are whole seconds; these are
--                             microseconds, as fine as the app's polling, so sub-second runs show.
CREATE OR REPLACE TEMP VIEW run_timings AS
SELECT r.id AS run_id, r.model, r.assistant_id, r.status, r.day, r.by_value,
       epoch(r.started_at) - epoch(r.created_at) AS queue_s,
       r.ended_at,
       epoch(r.ended_at) - epoch(r.started_at) AS duration_s,
       CASE WHEN r.status IN ('completed', 'failed', 'cancelled', 'expired', 'incomplete')
            THEN epoch(r.status_observed_at) - epoch(r.first_seen_at) END AS observed_s
FROM scoped_runs r;

-- run_budgets: one row per run in scope with a token budget or an incomplete reason
--   run_id, model, assistant_id, status, day, by_value, incomplete_reason
--   prompt_tokens, completion_tokens, max_prompt_tokens, max_completion_tokens  BIGINT
--   prompt_budget_use      DOUBLE  prompt_tokens / max_prompt_tokens (NULL without that cap)
--   completion_budget_use  DOUBLE  completion_tokens / max_completion_tokens (NULL without that cap)
--   budget_use             DOUBLE  the larger of the two (NULL: no cap set)
--   headroom               DOUBLE  1 - budget_use, floored at 0
--   hit_cap                BOOLEAN a cap was reached: budget_use >= 1 or incomplete for a max_* reason
--   budget_bucket          VARCHAR 'no cap', '< 50%', '50-80%', '80-95%', '95-100%', 'hit cap'
--   bucket_order           INTEGER 0..5 in that order
CREATE OR REPLACE TEMP VIEW run_budgets AS
WITH b AS (
    SELECT r.id AS run_id, r.model, r.assistant_id, r.status, r.day, r.by_value, r.incomplete_reason,
           r.prompt_tokens, r.completion_tokens, r.max_prompt_tokens, r.max_completion_tokens,
           CASE WHEN r.max_prompt_tokens > 0 THEN coalesce(r.prompt_tokens, 0) / r.max_prompt_tokens END
               AS prompt_budget_use,
           CASE WHEN r.max_completion_tokens > 0
                THEN coalesce(r.completion_tokens, 0) / r.max_completion_tokens END AS completion_budget_use
    FROM scoped_runs r
), u AS (
    SELECT *,
           CASE WHEN prompt_budget_use IS NULL THEN completion_budget_use
                WHEN completion_budget_use IS NULL THEN prompt_budget_use
                ELSE greatest(prompt_budget_use, completion_budget_use) END AS budget_use
    FROM b
), h AS (
    SELECT *,
           CASE WHEN budget_use IS NOT NULL THEN greatest(1 - budget_use, 0) END AS headroom,
           coalesce(budget_use >= 1, false)
               OR coalesce(incomplete_reason IN ('max_prompt_tokens', 'max_completion_tokens'), false)
               AS hit_cap
    FROM u
)
SELECT *, budget_bucket(hit_cap, budget_use) AS budget_bucket, budget_bucket_order(hit_cap, budget_use) AS bucket_order
FROM h;

-- priced_models: every model seen in scope and how it is priced today
--   model                  VARCHAR
--   runs                   BIGINT
--   first_day, last_day    DATE
--   price_rule             VARCHAR  rule on the model's last day ('exact', 'snapshot', NULL = unpriced)
--   price_name             VARCHAR
--   prompt_usd_per_1m, completion_usd_per_1m  DECIMAL(18,8)  price on the model's last day
CREATE OR REPLACE TEMP VIEW priced_models AS
SELECT r.model, count(*) AS runs, min(r.day) AS first_day, max(r.day) AS last_day,
       arg_max_null(p.price_rule, r.day) AS price_rule, arg_max_null(p.price_name, r.day) AS price_name,
       arg_max_null(p.prompt_usd_per_1m, r.day) AS prompt_usd_per_1m,
       arg_max_null(p.completion_usd_per_1m, r.day) AS completion_usd_per_1m
FROM scoped_runs r
LEFT JOIN run_prices p ON p.model IS NOT DISTINCT FROM r.model AND p.day = r.day
GROUP BY r.model;
