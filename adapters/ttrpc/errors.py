"""Translation between ttrpc statuses (gRPC codes) and shimledger's error hierarchy.

Callers classify failures by exception type, never by message text; the gRPC code that
produced an error stays available as ``exc.grpc_code``. The mapping follows containerd's
``errdefs.FromGRPC`` / ``ToGRPC``. Transport-level failures add two kinds::

    UnavailableError
    └── ConnectionClosedError   the connection is gone (ttrpc's ErrClosed)
    UnknownError
    └── ProtocolError           the peer sent bytes that are not valid ttrpc
"""

from __future__ import annotations

from domain.errors import (
    AlreadyExistsError,
    CanceledError,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    InvalidTransitionError,
    NotFoundError,
    NotImplementedError_,
    ShimledgerError,
    UnavailableError,
    UnknownError,
)

__all__ = [
    "CODE_ABORTED",
    "CODE_CANCELED",
    "CODE_DEADLINE_EXCEEDED",
    "CODE_INTERNAL",
    "CODE_INVALID_ARGUMENT",
    "CODE_RESOURCE_EXHAUSTED",
    "CODE_UNAVAILABLE",
    "CODE_UNIMPLEMENTED",
    "CODE_UNKNOWN",
    "ConnectionClosedError",
    "ProtocolError",
    "error_from_status",
    "status_from_error",
]

CODE_OK = 0
CODE_CANCELED = 1
CODE_UNKNOWN = 2
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_NOT_FOUND = 5
CODE_ALREADY_EXISTS = 6
CODE_RESOURCE_EXHAUSTED = 8
CODE_FAILED_PRECONDITION = 9
CODE_ABORTED = 10
CODE_UNIMPLEMENTED = 12
CODE_INTERNAL = 13
CODE_UNAVAILABLE = 14


class ConnectionClosedError(UnavailableError):
    """The ttrpc connection closed (or was never usable); pending calls fail with this."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(message)
        self.grpc_code = CODE_UNAVAILABLE


class ProtocolError(UnknownError):
    """The peer broke the wire protocol (undecodable envelope); a bug on one side."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.grpc_code = CODE_UNKNOWN


# code -> (error class, errdefs class text that FromGRPC strips from the message)
_FROM_CODE: dict[int, tuple[type[ShimledgerError], str]] = {
    CODE_CANCELED: (CanceledError, "context canceled"),
    CODE_INVALID_ARGUMENT: (InvalidArgumentError, "invalid argument"),
    CODE_DEADLINE_EXCEEDED: (DeadlineExceededError, "context deadline exceeded"),
    CODE_NOT_FOUND: (NotFoundError, "not found"),
    CODE_ALREADY_EXISTS: (AlreadyExistsError, "already exists"),
    CODE_FAILED_PRECONDITION: (FailedPreconditionError, "failed precondition"),
    CODE_UNIMPLEMENTED: (NotImplementedError_, "not implemented"),
    CODE_UNAVAILABLE: (UnavailableError, "unavailable"),
}
_UNKNOWN_CLASS_TEXT = "unknown"

# Most specific first: the first isinstance match wins.
_TO_CODE: tuple[tuple[type[ShimledgerError], int], ...] = (
    (InvalidTransitionError, CODE_FAILED_PRECONDITION),
    (ConflictError, CODE_ABORTED),
    (InvalidArgumentError, CODE_INVALID_ARGUMENT),
    (NotFoundError, CODE_NOT_FOUND),
    (AlreadyExistsError, CODE_ALREADY_EXISTS),
    (FailedPreconditionError, CODE_FAILED_PRECONDITION),
    (UnavailableError, CODE_UNAVAILABLE),
    (NotImplementedError_, CODE_UNIMPLEMENTED),
    (DeadlineExceededError, CODE_DEADLINE_EXCEEDED),
    (CanceledError, CODE_CANCELED),
)


def error_from_status(code: int, message: str) -> ShimledgerError:
    """The exception a non-OK status stands for; ``grpc_code`` keeps the original code.

    Like FromGRPC, a trailing ``": <class text>"`` is dropped, because the peer appended it
    only to say what the code already says ("container not created: not found").
    """
    cls, class_text = _FROM_CODE.get(code, (UnknownError, _UNKNOWN_CLASS_TEXT))
    suffix = ": " + class_text
    if message.endswith(suffix):
        message = message[: -len(suffix)]
    exc = cls(message)
    # The domain's errors know no wire codes, so ShimledgerError declares no grpc_code: it is
    # an attribute of ours, read back with getattr in status_from_error (and by tests).
    exc.grpc_code = code  # type: ignore[attr-defined]
    return exc


def status_from_error(exc: BaseException) -> tuple[int, str]:
    """The (code, message) a server sends for ``exc``.

    An explicit ``grpc_code`` wins, so an error received from one peer and re-raised is
    passed on unchanged. Exceptions outside the hierarchy are bugs and become Unknown.
    """
    message = str(exc) or type(exc).__name__
    code = getattr(exc, "grpc_code", None)
    if isinstance(exc, ShimledgerError) and isinstance(code, int) and code != CODE_OK:
        return code, message
    for cls, mapped in _TO_CODE:
        if isinstance(exc, cls):
            return mapped, message
    return CODE_UNKNOWN, message
