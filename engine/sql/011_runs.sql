-- 011_runs: the pipeline runner's state (prognos run, engine/cli/run.c).
-- One row per run in run.runs with the options it was started with (so that
-- --resume repeats them), one row per step in run.steps. A step row is written
-- before the step starts and updated as it retries and ends, so a scheduler (or
-- an operator) sees where a run is while it runs. Status values:
--   run:  running, ok, nothing (every step had nothing to do), gates (a model
--         failed its quality gates), failed, interrupted (the runner died)
--   step: pending, running, retrying (waiting for a transient cause to pass),
--         ok, nothing, gates, failed, interrupted
CREATE SCHEMA run;
CREATE TABLE run.runs (
    run_id      bigserial PRIMARY KEY,
    steps       text[] NOT NULL,
    options     jsonb NOT NULL,          -- the run's options: --source, --format, ...
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'nothing', 'gates', 'failed', 'interrupted')),
    exit_code   integer,
    message     text,
    resumed_by  bigint REFERENCES run.runs,   -- the run that resumed this one
    resumes     bigint REFERENCES run.runs,   -- the run this one resumed
    runner_pid  integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE TABLE run.steps (
    run_id      bigint NOT NULL REFERENCES run.runs,
    seq         integer NOT NULL,            -- position in the run's chain, from 1
    step        text NOT NULL CHECK (step IN ('load', 'features', 'retrain', 'kpi', 'report', 'drift')),
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'retrying', 'ok', 'nothing', 'gates', 'failed',
                                  'interrupted')),
    attempts    integer NOT NULL DEFAULT 0,  -- tries so far (1 = no retry)
    exit_code   integer,                     -- the code the step's own command gives
    message     text,
    result      jsonb,                       -- what the step produced (batch, kpi run, report file)
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, seq)
);
