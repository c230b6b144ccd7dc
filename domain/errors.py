"""Errors, one hierarchy mirroring containerd's errdefs.

Every layer raises these kinds so that the CLI can map each to a message and an exit
code, and the ttrpc adapter can map each to a gRPC status code and back::

    ShimledgerError
    ├── InvalidArgumentError       (gRPC 3)
    ├── NotFoundError              (gRPC 5)
    │   └── OwnedElsewhereError      the task is another node's (or state dir's)
    ├── AlreadyExistsError         (gRPC 6)
    ├── FailedPreconditionError    (gRPC 9)
    │   └── InvalidTransitionError   an illegal lifecycle step of a task
    ├── ConflictError              a concurrent writer changed the task first
    ├── UnavailableError           (gRPC 14)
    ├── NotImplementedError_       (gRPC 12)
    ├── DeadlineExceededError      (gRPC 4)
    ├── CanceledError              (gRPC 1)
    └── UnknownError               (gRPC 2, 8, 13, ... anything else)
"""

from __future__ import annotations


class ShimledgerError(Exception):
    """Base of every error shimledger raises on purpose (as opposed to a bug)."""


class InvalidArgumentError(ShimledgerError):
    """The caller gave something malformed: a bad ID, a bundle without config.json."""


class NotFoundError(ShimledgerError):
    """The task, shim or file the caller named does not exist."""


class OwnedElsewhereError(NotFoundError):
    """The ID names a live task of another owner (node, state dir): not this one's to touch.

    A NotFoundError, since for this owner there is no such task; the message says whose
    it is, so a user on the wrong host learns where to go.
    """


class AlreadyExistsError(ShimledgerError):
    """Something with that name exists already (a live task with the same ID)."""


class FailedPreconditionError(ShimledgerError):
    """The operation is valid but not in the current state."""


class InvalidTransitionError(FailedPreconditionError):
    """A lifecycle step the task's state machine does not allow."""


class ConflictError(ShimledgerError):
    """Another writer appended to the same task first; the caller may retry on fresh state."""


class UnavailableError(ShimledgerError):
    """A shim or socket could not be reached."""


class NotImplementedError_(ShimledgerError):  # noqa: N801 - avoids shadowing the builtin
    """The shim does not implement the method (gRPC Unimplemented)."""


class DeadlineExceededError(ShimledgerError):
    """A call did not finish before its deadline."""


class CanceledError(ShimledgerError):
    """The peer cancelled the call."""


class UnknownError(ShimledgerError):
    """An error the peer did not classify (gRPC Unknown, Internal, ResourceExhausted, ...)."""
