"""Ordo workers: the handler contract, the executor of one ticket, and the runtime around them.

`handlers` is the public API for task code (Registry, Retry, Fail); `context` is what a handler
sees; `executor` runs one dispatch ticket; `supervise` watches one running handler; `lease` owns one
attempt's lease and fencing; `consumer` is the adapter over the JetStream work consumers; `runtime`
is the fetch loop with limits and shutdown; `demo` holds the demo handlers; `service` wires it up.
"""

from ordo.workers.context import TaskContext
from ordo.workers.handlers import Fail, HandlerFn, Registry, Retry
from ordo.workers.runtime import Worker

__all__ = ["Fail", "HandlerFn", "Registry", "Retry", "TaskContext", "Worker"]
