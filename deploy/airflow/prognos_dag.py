"""prognos_dag.py: the Prognos pipeline as an Airflow DAG (Airflow 2.6 or later).

One BashOperator calling `prognos run`: the runner does the chain's steps in order,
retries transient failures with backoff and keeps each step's state in PostgreSQL
(run.runs, run.steps: `prognos run status` shows it, `prognos run --resume RUN`
continues a failed run from its failed step). Exit codes of `prognos run`: 0 ok,
3 nothing new (the task is marked skipped: skip_on_exit_code), 1 a step failed and
4 a model failed its quality gates (both fail the task, and Airflow alerts).
Set PROGNOS_HOME (or PROGNOS_DB) and PROGNOS_SOURCE in the worker's environment.
Copy this file into the DAGs folder.
"""
import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

PROGNOS = os.environ.get("PROGNOS_BIN", "/usr/local/bin/prognos")
ENV = {
    "PROGNOS_HOME": os.environ.get("PROGNOS_HOME", "/var/lib/prognos"),
    "PROGNOS_SOURCE": os.environ.get("PROGNOS_SOURCE", "/srv/prognos/extracts/latest"),
    "PROGNOS_FORMAT": os.environ.get("PROGNOS_FORMAT", "canonical"),
}
if os.environ.get("PROGNOS_DB"):
    ENV["PROGNOS_DB"] = os.environ["PROGNOS_DB"]

# the runner retries transient causes itself; Airflow does not retry: a failed step
# is resumed (prognos run --resume RUN) or retried by the next scheduled run
PIPELINE = (f'{PROGNOS} run --source "$PROGNOS_SOURCE" --format "$PROGNOS_FORMAT"'
            " --retries 5 --backoff 60")

with DAG(
    dag_id="prognos_pipeline",
    description="Prognos: load, features, retrain, KPIs, report, drift (prognos run)",
    schedule="30 2 * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "execution_timeout": timedelta(hours=6)},
    tags=["prognos"],
) as dag:
    BashOperator(
        task_id="prognos_run",
        bash_command=PIPELINE,
        env=ENV,
        append_env=True,
        skip_on_exit_code=3,
    )
