-- runtap capture schema. Applied on every start (idempotent); analytics/ingest/store.py reads the column
-- lists back from the catalog, so a column added here is written and read without code changes
-- as long as analytics/ingest/merge.py fills it.
--
-- Times are TIMESTAMPTZ (the API sends unix seconds). Fetching a TIMESTAMPTZ into Python needs
-- pytz, which runtap does not depend on: Python readers select epoch(col) or col::VARCHAR.
-- JSON columns hold the API's structures as sent. No column ever holds an API key: requests carry
-- only key_fingerprint.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- One row per run id: its latest state under the merge rules in analytics/ingest/merge.py.
CREATE TABLE IF NOT EXISTS runs (
    id                    VARCHAR PRIMARY KEY,
    thread_id             VARCHAR,
    assistant_id          VARCHAR,
    model                 VARCHAR,
    status                VARCHAR,
    created_at            TIMESTAMPTZ,
    started_at            TIMESTAMPTZ,
    expires_at            TIMESTAMPTZ,
    cancelled_at          TIMESTAMPTZ,
    failed_at             TIMESTAMPTZ,
    completed_at          TIMESTAMPTZ,
    -- completed_at / failed_at / cancelled_at / expires_at for the final status, else the time
    -- runtap first observed the terminal status (incomplete runs carry no timestamp of their own)
    ended_at              TIMESTAMPTZ,
    incomplete_reason     VARCHAR,
    last_error_code       VARCHAR,
    last_error_message    VARCHAR,
    prompt_tokens         BIGINT,
    completion_tokens     BIGINT,
    total_tokens          BIGINT,
    max_prompt_tokens     BIGINT,
    max_completion_tokens BIGINT,
    temperature           DOUBLE,
    top_p                 DOUBLE,
    parallel_tool_calls   BOOLEAN,
    tools                 JSON,
    tool_choice           JSON,
    response_format       JSON,
    truncation_strategy   JSON,
    metadata              JSON,
    api_version           VARCHAR,     -- as the client asked for it, verbatim: see api_provider
    api_provider          VARCHAR,     -- 'openai' (OpenAI-Beta header) | 'azure' (api-version query) | NULL
    key_fingerprint       VARCHAR,
    source                VARCHAR,     -- 'stream' | 'response' of the snapshot the row's fields come from
    first_seen_at         TIMESTAMPTZ,
    last_seen_at          TIMESTAMPTZ,
    status_observed_at    TIMESTAMPTZ, -- merge bookkeeping: when `status` was observed (earliest, once terminal)
    fields_observed_at    TIMESTAMPTZ, -- merge bookkeeping: observed_at of the snapshot the fields come from
    requires_action_at    TIMESTAMPTZ, -- start of the open tool round, cleared by its submit_tool_outputs
    finished_counted      BOOLEAN NOT NULL DEFAULT false, -- RunFinished emitted (survives restarts)
    usage_counted         BOOLEAN NOT NULL DEFAULT false, -- tokens emitted (RunFinished or UsageKnown)
    instructions          VARCHAR,     -- only with --store-prompts
    additional_instructions VARCHAR,   -- only with --store-prompts
    additional_messages   JSON,        -- only with --store-prompts
    raw                   JSON         -- the object the fields come from (without instructions unless --store-prompts)
);

-- One row per step id, same merge rules with step statuses.
CREATE TABLE IF NOT EXISTS run_steps (
    id                 VARCHAR PRIMARY KEY,
    run_id             VARCHAR,
    thread_id          VARCHAR,
    assistant_id       VARCHAR,
    type               VARCHAR,
    status             VARCHAR,
    created_at         TIMESTAMPTZ,
    completed_at       TIMESTAMPTZ,
    cancelled_at       TIMESTAMPTZ,
    failed_at          TIMESTAMPTZ,
    expired_at         TIMESTAMPTZ,
    last_error_code    VARCHAR,
    last_error_message VARCHAR,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    total_tokens       BIGINT,
    step_details       JSON,
    -- JSON arrays, not VARCHAR[]: DuckDB updates a LIST column as delete + insert, and never vacuums
    -- deleted rows of a table with a primary key, so every step update would grow the file.
    -- In SQL: from_json(tool_types, '["VARCHAR"]') or tool_types::VARCHAR[].
    tool_types         JSON,       -- distinct step_details.tool_calls[].type, in order of first use
    tool_names         JSON,       -- distinct function names called by this step
    metadata           JSON,
    api_version        VARCHAR,
    api_provider       VARCHAR,
    key_fingerprint    VARCHAR,
    source             VARCHAR,
    first_seen_at      TIMESTAMPTZ,
    last_seen_at       TIMESTAMPTZ,
    status_observed_at TIMESTAMPTZ,
    fields_observed_at TIMESTAMPTZ,
    finished_counted   BOOLEAN NOT NULL DEFAULT false,
    raw                JSON
);

-- Every change of a stored run's status (first sighting: from_status NULL).
CREATE TABLE IF NOT EXISTS run_events (
    run_id      VARCHAR NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    from_status VARCHAR,
    to_status   VARCHAR,
    source      VARCHAR,   -- 'stream' | 'response'
    operation   VARCHAR,
    request_id  VARCHAR
);

-- One row per proxied request.
CREATE TABLE IF NOT EXISTS requests (
    id                  VARCHAR PRIMARY KEY,
    started_at          TIMESTAMPTZ,
    method              VARCHAR,
    path                VARCHAR,
    operation           VARCHAR,   -- NULL for calls outside the Runs and Responses APIs
    status_code         INTEGER,
    streamed            BOOLEAN,
    duration_ms         DOUBLE,
    upstream_ttfb_ms    DOUBLE,
    bytes_in            BIGINT,
    bytes_out           BIGINT,
    upstream_request_id VARCHAR,
    key_fingerprint     VARCHAR,
    error               VARCHAR,
    api_version         VARCHAR,
    api_provider        VARCHAR
);

-- Schema version 2: columns added since version 1, for databases created before them (the CREATE
-- TABLEs above already have them; on a new database these do nothing). Only ever ADD COLUMN ...
-- IF NOT EXISTS here, so applying the file stays idempotent.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS api_provider VARCHAR;
ALTER TABLE run_steps ADD COLUMN IF NOT EXISTS api_provider VARCHAR;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS api_provider VARCHAR;

-- One row per response id (Responses API): its latest state under the merge rules in
-- analytics/ingest/response_merge.py (the run rules with the Responses statuses). Parallel to `runs`.
CREATE TABLE IF NOT EXISTS responses (
    id                      VARCHAR PRIMARY KEY,
    model                   VARCHAR,
    status                  VARCHAR,     -- queued | in_progress | completed | failed | cancelled | incomplete
    background              BOOLEAN,
    stream                  BOOLEAN,     -- created by a streamed request (NULL: the create was not seen)
    store                   BOOLEAN,
    created_at              TIMESTAMPTZ,
    completed_at            TIMESTAMPTZ,
    -- completed_at for a completed response, else the time runtap first observed the terminal status
    ended_at                TIMESTAMPTZ,
    queued_observed_at      TIMESTAMPTZ, -- earliest observation of `queued` (background responses)
    in_progress_observed_at TIMESTAMPTZ, -- earliest observation of `in_progress`
    conversation_id         VARCHAR,
    previous_response_id    VARCHAR,
    prompt_id               VARCHAR,     -- prompt.id: the reusable prompt template (the Responses API's assistant)
    prompt_version          VARCHAR,     -- prompt.version (its variables are prompts: only in raw, with --store-prompts)
    max_output_tokens       BIGINT,
    max_tool_calls          BIGINT,
    input_tokens            BIGINT,      -- including cached_input_tokens
    cached_input_tokens     BIGINT,      -- usage.input_tokens_details.cached_tokens
    cache_write_tokens      BIGINT,      -- usage.input_tokens_details.cache_write_tokens
    output_tokens           BIGINT,      -- including reasoning_tokens
    reasoning_tokens        BIGINT,      -- usage.output_tokens_details.reasoning_tokens
    total_tokens            BIGINT,
    incomplete_reason       VARCHAR,     -- max_output_tokens | content_filter
    error_code              VARCHAR,
    error_message           VARCHAR,
    -- The output's tool calls: [{type, id, call_id, name, status}] (arguments only with
    -- --store-prompts); kinds and function names as in run_steps.tool_types / tool_names.
    tool_calls              JSON,
    tool_types              JSON,
    tool_names              JSON,
    function_calls          INTEGER,     -- function calls in the output: the app's to answer
    tools                   JSON,
    tool_choice             JSON,
    parallel_tool_calls     BOOLEAN,
    service_tier            VARCHAR,
    reasoning_effort        VARCHAR,
    temperature             DOUBLE,
    top_p                   DOUBLE,
    metadata                JSON,
    api_version             VARCHAR,     -- the Responses API version the client called: see api_provider
    api_provider            VARCHAR,     -- 'azure' (api-version query or /openai/v1/ path) | 'openai' (/v1/ path) | NULL
    key_fingerprint         VARCHAR,
    source                  VARCHAR,     -- 'stream' | 'response' of the snapshot the row's fields come from
    request_started_at      TIMESTAMPTZ, -- the create request's send time, when runtap saw it
    first_event_at          TIMESTAMPTZ, -- a streamed create's first event
    first_output_at         TIMESTAMPTZ, -- a streamed create's first output delta (text, refusal, arguments)
    first_seen_at           TIMESTAMPTZ,
    last_seen_at            TIMESTAMPTZ,
    status_observed_at      TIMESTAMPTZ, -- merge bookkeeping: when `status` was observed (earliest, once terminal)
    fields_observed_at      TIMESTAMPTZ, -- merge bookkeeping: observed_at of the snapshot the fields come from
    tool_wait_at            TIMESTAMPTZ, -- ended with function calls; cleared by the request answering them
    finished_counted        BOOLEAN NOT NULL DEFAULT false,
    usage_counted           BOOLEAN NOT NULL DEFAULT false,
    instructions            VARCHAR,     -- only with --store-prompts
    input                   JSON,        -- the create request's input, only with --store-prompts
    raw                     JSON         -- the object the fields come from (without prompts or output text unless --store-prompts)
);

-- Every change of a stored response's status (first sighting: from_status NULL), like run_events.
CREATE TABLE IF NOT EXISTS response_events (
    response_id VARCHAR NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    from_status VARCHAR,
    to_status   VARCHAR,
    source      VARCHAR,   -- 'stream' | 'response'
    operation   VARCHAR,
    request_id  VARCHAR
);

-- Schema version 3: responses gained api_version and api_provider (as runs have them), prompt_id and
-- prompt_version. Only ever ADD COLUMN ... IF NOT EXISTS here, so applying the file stays idempotent.
ALTER TABLE responses ADD COLUMN IF NOT EXISTS api_version VARCHAR;
ALTER TABLE responses ADD COLUMN IF NOT EXISTS api_provider VARCHAR;
ALTER TABLE responses ADD COLUMN IF NOT EXISTS prompt_id VARCHAR;
ALTER TABLE responses ADD COLUMN IF NOT EXISTS prompt_version VARCHAR;

-- Schema version 4: the Azure AI Foundry agent a response ran as (its AgentReference: `agent_reference`,
-- earlier `agent`, in the response or its create request; analytics/ingest/response_agents.py).
ALTER TABLE responses ADD COLUMN IF NOT EXISTS agent_name VARCHAR;
ALTER TABLE responses ADD COLUMN IF NOT EXISTS agent_version VARCHAR;
