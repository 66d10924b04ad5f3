-- cost: What did agent work cost per UTC day, model and assistant, runs and responses alike?
--
-- Token cost is usage x the price book (analytics/prices.csv, overridden by --prices): a run's prompt and
-- completion tokens; a response's uncached input, cached input (at the cached-input price) and output
-- tokens (reasoning included, billed as output). Tool fees: code_interpreter sessions and
-- file_search/retrieval calls of the runs' steps, file_search and web_search calls of the responses.
-- Something whose model has no price counts in `runs`/`responses` and `unpriced_runs` but adds nothing to
-- token_usd/total_usd (see `unpriced`). Split by API with --by api (views: agent_costs).
--
-- columns:
--   day                   DATE     UTC day the run or response was created
--   by_value              VARCHAR  the --by value (metadata.KEY, key_fingerprint, conversation, api); absent without --by
--   model                 VARCHAR  model as the API reported it
--   assistant_id          VARCHAR  runs only (NULL for responses)
--   runs                  BIGINT   runs (Assistants API) created that day
--   responses             BIGINT   responses (Responses API) created that day
--   unpriced_runs         BIGINT   of those, runs or responses whose model has no price
--   prompt_tokens         BIGINT   prompt / input tokens, cached included
--   cached_prompt_tokens  BIGINT   cached input tokens (responses)
--   completion_tokens     BIGINT   completion / output tokens, reasoning included
--   reasoning_tokens      BIGINT   reasoning tokens (responses)
--   total_tokens          BIGINT
--   token_usd             DOUBLE   tokens at the model's price (NULL: nothing priced)
--   tool_usd              DOUBLE   tool fees
--   total_usd             DOUBLE   token_usd + tool_usd of the priced runs and responses
-- totals: runs responses unpriced_runs prompt_tokens cached_prompt_tokens completion_tokens reasoning_tokens total_tokens token_usd tool_usd total_usd
SELECT day, by_value, model, assistant_id,
       count(*) FILTER (WHERE api = 'assistants') AS runs,
       count(*) FILTER (WHERE api = 'responses') AS responses,
       count(*) FILTER (WHERE NOT priced) AS unpriced_runs,
       CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
       CAST(sum(cached_prompt_tokens) AS BIGINT) AS cached_prompt_tokens,
       CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
       CAST(sum(reasoning_tokens) AS BIGINT) AS reasoning_tokens,
       CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
       usd(sum(token_usd)) AS token_usd,
       usd(sum(tool_usd)) AS tool_usd,
       usd(sum(total_usd)) AS total_usd
FROM agent_costs
GROUP BY day, by_value, model, assistant_id
ORDER BY day, by_value NULLS FIRST, model NULLS FIRST, assistant_id NULLS FIRST
