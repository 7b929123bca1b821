"""The domain's error tree. The gateway maps each class to one problem+json type and status."""

from __future__ import annotations

from datetime import datetime


class DomainError(Exception):
    """A command the task's current state does not allow."""

    code = "domain-error"


class TaskNotFound(DomainError):
    code = "task-not-found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} does not exist")
        self.task_id = task_id


class TaskAlreadyExists(DomainError):
    code = "task-exists"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} already exists")
        self.task_id = task_id


class IdempotencyConflict(DomainError):
    code = "idempotency-conflict"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"idempotency key already used for task {task_id} with a different request body")
        self.task_id = task_id


class InvalidTransition(DomainError):
    code = "invalid-transition"

    def __init__(self, task_id: str, status: str, action: str) -> None:
        super().__init__(f"cannot {action} task {task_id} while it is {status}")
        self.task_id = task_id
        self.status = status
        self.action = action


class LeaseHeld(DomainError):
    """A ticket came back while the current attempt's lease is still valid."""

    code = "lease-held"

    def __init__(self, task_id: str, lease_until: datetime) -> None:
        super().__init__(f"task {task_id} is leased until {lease_until.isoformat()}")
        self.task_id = task_id
        self.lease_until = lease_until
