-- top-assistants: Which assistants (and Responses prompt templates) cost the most, and what share of the spend is theirs?
--
-- The runtap_limit (--limit, default 20) most expensive rows by total_usd, then tokens. Runs group by their
-- assistant. Responses have no assistant: those that ran as an Azure AI Foundry agent (responses.agent_name)
-- group by its name; those created from a reusable prompt template (`prompt.id`, which
-- OpenAI's migration guide names the successor of an assistant) group by that template; the others group
-- by model, with assistant_id NULL, so spend without an agent identity still shows, per model. The shares
-- are of runs and responses together (view agent_costs).
--
-- columns:
--   assistant_id       VARCHAR  an assistant id (runs), a Foundry agent name or prompt template id (responses), or NULL: responses with neither, one row per model
--   by_value           VARCHAR  the --by value; absent without --by
--   api                VARCHAR  assistants | responses
--   models             VARCHAR  models used, comma-separated
--   runs               BIGINT   runs or responses
--   threads            BIGINT   distinct threads or conversations
--   unpriced_runs      BIGINT   runs or responses whose model has no price (not in the USD columns)
--   total_tokens       BIGINT
--   token_usd          DOUBLE
--   tool_usd           DOUBLE
--   total_usd          DOUBLE
--   cost_share_pct     DOUBLE   this row's total_usd as a percentage of all runs and responses in scope
-- totals: runs unpriced_runs total_tokens token_usd tool_usd total_usd cost_share_pct
SELECT agent_id AS assistant_id, by_value, api,
       string_agg(DISTINCT model, ',' ORDER BY model) AS models,
       count(*) AS runs,
       count(DISTINCT conversation_id) AS threads,
       count(*) FILTER (WHERE NOT priced) AS unpriced_runs,
       CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
       usd(sum(token_usd)) AS token_usd,
       usd(sum(tool_usd)) AS tool_usd,
       usd(sum(total_usd)) AS total_usd,
       CAST(round(100 * sum(total_usd) / nullif(sum(sum(total_usd)) OVER (), 0), 2) AS DOUBLE) AS cost_share_pct
FROM agent_costs
GROUP BY agent_id, by_value, api, CASE WHEN agent_id IS NULL AND api = 'responses' THEN model END
ORDER BY total_usd DESC NULLS LAST, total_tokens DESC, assistant_id NULLS LAST, api, models
LIMIT coalesce(CAST(getvariable('runtap_limit') AS BIGINT), 20)
