"""Workflow-engine bindings: one small module per engine, each a thin shell over a `Runtime`.

An engine module turns the engine's task or job into a `Runtime.run` input (each SDK worker
process runs on its own default Runtime), and the output or
`SqlAdapterError` back into the engine's result, mapping `retryable` to the engine's retry
status. The query path never imports an engine.

    conductor        Conductor OSS, Orkes Conductor, Oracle MicroTx Workflows (conductor-python)
    conductor_local  a Conductor workflow file run locally, without a server (`sqladapter run`)
    rochallor        the Rochallor workflow engine (rochallor-sdk, the `rochallor` extra)
"""

#: The task type every engine serves; `--task-name` adds aliases.
TASK_NAME = "query_sql"
#: The write task type, served only when asked for (`--task-name execute_sql`); never an alias
#: of TASK_NAME: only a task of exactly this type writes.
WRITE_TASK_NAME = "execute_sql"
