-- unpriced: Which runs and responses have no price, so that no report silently counts them as free?
--
-- A model is unpriced when neither an exact price-book name nor the dated-snapshot rule matches it
-- (fine-tuned ft:... models, Azure deployment names, models newer than the price book). Add them with
-- --prices FILE / RUNTAP_PRICES. An empty result means every run and response in scope is priced.
--
-- columns:
--   model              VARCHAR
--   by_value           VARCHAR  the --by value; absent without --by
--   runs               BIGINT   runs (Assistants API)
--   responses          BIGINT   responses (Responses API)
--   assistants         BIGINT   distinct assistants
--   prompt_tokens      BIGINT
--   completion_tokens  BIGINT
--   total_tokens       BIGINT
--   first_day          DATE
--   last_day           DATE
-- totals: runs responses prompt_tokens completion_tokens total_tokens
SELECT model, by_value,
       count(*) FILTER (WHERE api = 'assistants') AS runs,
       count(*) FILTER (WHERE api = 'responses') AS responses,
       count(DISTINCT assistant_id) AS assistants,
       CAST(sum(prompt_tokens) AS BIGINT) AS prompt_tokens,
       CAST(sum(completion_tokens) AS BIGINT) AS completion_tokens,
       CAST(sum(total_tokens) AS BIGINT) AS total_tokens,
       min(day) AS first_day,
       max(day) AS last_day
FROM agent_costs
WHERE NOT priced
GROUP BY model, by_value
ORDER BY runs + responses DESC, model NULLS FIRST
