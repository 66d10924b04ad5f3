-- runtap report views for the Responses API, installed after views.sql (same variables, macros and
-- price book): the response counterparts of the run views, and `agent_costs`, which puts runs and
-- responses side by side for the reports that cover both APIs.

-- response_costs: one row per response in scope, with its token and tool cost lines
--   response_id, conversation_id, previous_response_id, prompt_id, agent_name, model, status, created_at, day, by_value,
--   key_fingerprint, metadata, background, service_tier
--   input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, total_tokens  BIGINT (0 while unknown)
--   priced                 BOOLEAN  the model has a price (else the token and total USD are NULL)
--   price_rule, price_name, effective_from, prompt_usd_per_1m, cached_prompt_usd_per_1m,
--   completion_usd_per_1m  (from run_prices; a model without a cached price bills cached input at the prompt price)
--   file_search_calls, web_search_calls  BIGINT  built-in tool calls in the output
--   prompt_usd             DECIMAL  uncached input at the prompt price + cached input at the cached price
--   completion_usd         DECIMAL  output tokens (reasoning included: it is billed as output)
--   token_usd, tool_usd, total_usd  DECIMAL  as in run_costs; tool_usd = calls x the tool's unit_usd
CREATE OR REPLACE TEMP VIEW response_costs AS
WITH base AS (
    SELECT r.id AS response_id, r.conversation_id, r.previous_response_id, r.prompt_id, r.agent_name, r.model,
           r.status,
           r.created_at,
           r.day, r.by_value, r.key_fingerprint, r.metadata, r.background, r.service_tier,
           coalesce(r.input_tokens, 0) AS input_tokens,
           least(coalesce(r.cached_input_tokens, 0), coalesce(r.input_tokens, 0)) AS cached_input_tokens,
           coalesce(r.output_tokens, 0) AS output_tokens,
           coalesce(r.reasoning_tokens, 0) AS reasoning_tokens,
           coalesce(r.total_tokens, coalesce(r.input_tokens, 0) + coalesce(r.output_tokens, 0)) AS total_tokens,
           p.price_rule IS NOT NULL AS priced,
           p.price_rule, p.price_name, p.effective_from, p.prompt_usd_per_1m,
           coalesce(p.cached_prompt_usd_per_1m, p.prompt_usd_per_1m) AS cached_prompt_usd_per_1m,
           p.completion_usd_per_1m,
           coalesce(json_extract_string(CAST(r.tool_calls AS JSON), '$[*].type'), []::VARCHAR[]) AS call_types
    FROM scoped_responses r
    LEFT JOIN run_prices p ON p.model IS NOT DISTINCT FROM r.model AND p.day = r.day
), counted AS (
    SELECT * EXCLUDE (call_types),
           CAST(len(list_filter(call_types, t -> t = 'file_search_call')) AS BIGINT) AS file_search_calls,
           CAST(len(list_filter(call_types, t -> t = 'web_search_call')) AS BIGINT) AS web_search_calls
    FROM base
), fees AS (
    SELECT d.day, coalesce(fs.unit_usd, 0) AS fs_usd, coalesce(ws.unit_usd, 0) AS ws_usd
    FROM (SELECT DISTINCT day FROM base) d
    LEFT JOIN price_periods fs ON fs.kind = 'tool' AND fs.key = 'file_search'
          AND d.day >= fs.valid_from AND d.day < fs.valid_to
    LEFT JOIN price_periods ws ON ws.kind = 'tool' AND ws.key = 'web_search'
          AND d.day >= ws.valid_from AND d.day < ws.valid_to
)
SELECT c.*,
       per_million(c.input_tokens - c.cached_input_tokens, c.prompt_usd_per_1m)
           + per_million(c.cached_input_tokens, c.cached_prompt_usd_per_1m) AS prompt_usd,
       per_million(c.output_tokens, c.completion_usd_per_1m) AS completion_usd,
       prompt_usd + completion_usd AS token_usd,
       c.file_search_calls * coalesce(f.fs_usd, 0) + c.web_search_calls * coalesce(f.ws_usd, 0) AS tool_usd,
       token_usd + tool_usd AS total_usd
FROM counted c
LEFT JOIN fees f ON f.day IS NOT DISTINCT FROM c.day;

-- agent_costs: runs and responses in one shape, one row per object in scope
--   api                    VARCHAR  'assistants' (a run) | 'responses' (a response)
--   object_id              VARCHAR  run id or response id
--   model, status, created_at, day, by_value, key_fingerprint
--   assistant_id           VARCHAR  runs only
--   agent_id               VARCHAR  what configured the work: a run's assistant_id; a response's Azure AI Foundry
--                                   agent_name, else its prompt_id (its reusable prompt template, the Responses
--                                   API's successor of an assistant); NULL for a response that names neither
--   conversation_id        VARCHAR  the run's thread_id, the response's conversation id
--   prompt_tokens          BIGINT   prompt tokens of a run, input tokens of a response (cached included)
--   cached_prompt_tokens   BIGINT   cached input tokens (0 for runs: the Runs API does not report them)
--   completion_tokens      BIGINT   completion / output tokens (reasoning included)
--   reasoning_tokens       BIGINT   reasoning tokens (0 for runs)
--   total_tokens           BIGINT
--   priced                 BOOLEAN
--   token_usd, tool_usd, total_usd  DECIMAL
CREATE OR REPLACE TEMP VIEW agent_costs AS
SELECT 'assistants' AS api, run_id AS object_id, model, status, created_at, day, by_value, key_fingerprint,
       assistant_id, assistant_id AS agent_id, thread_id AS conversation_id, prompt_tokens,
       CAST(0 AS BIGINT) AS cached_prompt_tokens,
       completion_tokens, CAST(0 AS BIGINT) AS reasoning_tokens, total_tokens, priced, token_usd, tool_usd,
       total_usd
FROM run_costs
UNION ALL BY NAME
SELECT 'responses' AS api, response_id AS object_id, model, status, created_at, day, by_value, key_fingerprint,
       NULL AS assistant_id, coalesce(agent_name, prompt_id) AS agent_id, conversation_id,
       input_tokens AS prompt_tokens,
       cached_input_tokens AS cached_prompt_tokens, output_tokens AS completion_tokens, reasoning_tokens,
       total_tokens, priced, token_usd, tool_usd, total_usd
FROM response_costs;

-- response_timings: one row per response in scope
--   response_id, model, status, day, by_value, background, stream
--   queue_s           DOUBLE  queued -> in_progress, as runtap observed them (background responses)
--   duration_s        DOUBLE  created_at -> ended_at
--   first_event_s     DOUBLE  streamed creates: request sent -> first event
--   first_output_s    DOUBLE  streamed creates: request sent -> first output delta
--   observed_s        DOUBLE  runtap's own clock: the response first seen -> its final status first seen
CREATE OR REPLACE TEMP VIEW response_timings AS
SELECT r.id AS response_id, r.model, r.status, r.day, r.by_value, r.background, r.stream,
       epoch(r.in_progress_observed_at) - epoch(r.queued_observed_at) AS queue_s,
       epoch(r.ended_at) - epoch(r.created_at) AS duration_s,
       epoch(r.first_event_at) - epoch(r.request_started_at) AS first_event_s,
       epoch(r.first_output_at) - epoch(r.request_started_at) AS first_output_s,
       CASE WHEN r.status IN ('completed', 'failed', 'cancelled', 'incomplete')
            THEN epoch(r.status_observed_at) - epoch(r.first_seen_at) END AS observed_s
FROM scoped_responses r;

-- response_tool_turnarounds: each response that ended with function calls and was answered by a
-- response linked to it by previous_response_id (rounds matched by call id only, as the openai-agents
-- SDK makes them, are in runtap_response_tool_turnaround_seconds, not here)
--   response_id      VARCHAR      the response that made the calls
--   model, by_value
--   began_at         TIMESTAMPTZ  its terminal status first observed
--   ended_at         TIMESTAMPTZ  the first answering request sent
--   seconds          DOUBLE       ended_at - began_at
CREATE OR REPLACE TEMP VIEW response_tool_turnarounds AS
SELECT a.id AS response_id, a.model, a.by_value, a.status_observed_at AS began_at,
       min(b.request_started_at) AS ended_at,
       epoch(min(b.request_started_at)) - epoch(a.status_observed_at) AS seconds
FROM scoped_responses a
JOIN responses b ON b.previous_response_id = a.id AND b.request_started_at >= a.status_observed_at
WHERE a.status = 'completed' AND a.function_calls > 0
GROUP BY a.id, a.model, a.by_value, a.status_observed_at;

-- response_budgets: one row per response in scope, in run_budgets' shape (the cap is max_output_tokens)
--   response_id, model, status, day, by_value, incomplete_reason, output_tokens, max_output_tokens
--   budget_use             DOUBLE  output_tokens / max_output_tokens (NULL: no cap)
--   headroom               DOUBLE  1 - budget_use, floored at 0
--   hit_cap                BOOLEAN budget_use >= 1, or incomplete for max_output_tokens
--   budget_bucket          VARCHAR 'no cap', '< 50%', '50-80%', '80-95%', '95-100%', 'hit cap'
--   bucket_order           INTEGER 0..5 in that order
CREATE OR REPLACE TEMP VIEW response_budgets AS
WITH u AS (
    SELECT r.id AS response_id, r.model, r.status, r.day, r.by_value, r.incomplete_reason, r.output_tokens,
           r.max_output_tokens,
           CASE WHEN r.max_output_tokens > 0 THEN coalesce(r.output_tokens, 0) / r.max_output_tokens END
               AS budget_use
    FROM scoped_responses r
), h AS (
    SELECT *,
           CASE WHEN budget_use IS NOT NULL THEN greatest(1 - budget_use, 0) END AS headroom,
           coalesce(budget_use >= 1, false) OR coalesce(incomplete_reason = 'max_output_tokens', false)
               AS hit_cap
    FROM u
)
SELECT *, budget_bucket(hit_cap, budget_use) AS budget_bucket, budget_bucket_order(hit_cap, budget_use) AS bucket_order
FROM h;
