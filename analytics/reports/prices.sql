-- prices: Which prices are in effect: the built-in price book merged with --prices / RUNTAP_PRICES?
--
-- One row per price-book row; --since/--until/--by do not apply. valid_to is the next row's
-- effective_from for the same name (open-ended for the last). source is 'builtin' or the user's file.
--
-- columns:
--   name                   VARCHAR
--   kind                   VARCHAR  model | tool
--   effective_from         DATE
--   valid_to               DATE
--   prompt_usd_per_1m      DOUBLE
--   completion_usd_per_1m  DOUBLE
--   unit_usd               DOUBLE
--   unit                   VARCHAR  session | call (tools)
--   source                 VARCHAR
-- totals:
SELECT name, kind, effective_from,
       CASE WHEN isinf(valid_to) THEN NULL ELSE valid_to END AS valid_to,
       CAST(prompt_usd_per_1m AS DOUBLE) AS prompt_usd_per_1m,
       CAST(completion_usd_per_1m AS DOUBLE) AS completion_usd_per_1m,
       CAST(unit_usd AS DOUBLE) AS unit_usd, unit, source
FROM price_periods
ORDER BY kind, key, effective_from
