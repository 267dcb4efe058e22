"""Reading an error reply of Redis by its code, however the server's version and redis-py spell it.

An error reply is read by its code: redis-py's class for it, else the code as the reply
spells it, also inside the error of a script. One saying the server cannot serve locks now
(out of memory, a replica, too few replicas...) is one of ``UNAVAILABLE_REPLIES``, which
``RedisConnection.errors_translated`` raises as a ``BackendUnavailable`` naming the condition;
an ACL refusal (``acl_refusal``) becomes a ``ConfigurationError`` naming the rules to add.
"""

from __future__ import annotations

import re

import redis

from locked_targets.rwlock import telemetry
from locked_targets.rwlock.redis_urls import CLUSTER_URL_FORM

_CLUSTER_NODE = (
    f"the server is a Redis Cluster node: redis_url must name the cluster, as in {CLUSTER_URL_FORM}"
)
# The codes of the error replies that mean the server cannot serve locks now, not that a
# request was wrong, and what each means; retrying may help (on_redis_error = wait).
UNAVAILABLE_REPLIES = {
    "OOM": "out of memory: it refuses writes beyond maxmemory (maxmemory-policy noeviction)",
    "READONLY": "it is a read-only replica, not the master",
    "NOREPLICAS": "fewer replicas acknowledge its writes than min-replicas-to-write asks",
    "MISCONF": "it cannot save to disk, and refuses writes until it can (stop-writes-on-bgsave-error)",
    "LOADING": "it is loading its data set into memory",
    "MASTERDOWN": "it is a replica that lost its master",
    "BUSY": "it is busy running a script",
    "TRYAGAIN": "the cluster is moving the lock's slot to another node",
    "CLUSTERDOWN": "the cluster is down",
    "MOVED": _CLUSTER_NODE,
    "ASK": _CLUSTER_NODE,
}
# Through a cluster client, a redirection that outlasted following it means the slot is moving.
UNAVAILABLE_REPLIES_IN_A_CLUSTER = {
    **UNAVAILABLE_REPLIES,
    "MOVED": "the cluster moved the lock's slot to another node (a failover or resharding)",
    "ASK": "the cluster is moving the lock's slot to another node",
}
# redis-py's classes of error replies, and their codes: redis-py strips the code from the
# message. A subclass comes before its base (MasterDownError is a ClusterDownError).
_CODES_OF_CLASSES: tuple[tuple[type[redis.RedisError], str], ...] = (
    (redis.exceptions.NoPermissionError, "NOPERM"),
    (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.BusyLoadingError, "LOADING"),
    (redis.exceptions.MasterDownError, "MASTERDOWN"),
    (redis.exceptions.ClusterDownError, "CLUSTERDOWN"),
    (redis.exceptions.TryAgainError, "TRYAGAIN"),
    (redis.exceptions.MovedError, "MOVED"),
    (redis.exceptions.AskError, "ASK"),
)
# An error code as a reply spells it: its first word, or, in the error of a script as Redis
# 6.2 wraps it, the word after the dash ("Error running script (call to f_...):
# @user_script:56: @user_script: 56: -OOM command not allowed ...").
_SPELLED_CODE = re.compile(r"(?:^|\s-)([A-Z]{2,})(?=\s|$)")
# An ACL refusal inside a script has no NOPERM code: Redis 6.2 and 7.0 say "The user executing
# the script can't run this command or subcommand" (or "... publish to the channel ...",
# "... access at least one of the keys ..."), 7.2 on "ACL failure in script: ...".
_REFUSED_IN_SCRIPT = ("The user executing the script can't", "ACL failure in script")


def error_code(error: BaseException) -> str | None:
    """The code of an error reply (``OOM``, ``NOPERM``...), by redis-py's class for it, else as the
    reply spells it, also inside a script's error; None for an error that has none."""
    for error_class, code in _CODES_OF_CLASSES:
        if isinstance(error, error_class):
            return code
    spelled = _SPELLED_CODE.search(str(error))
    if spelled is not None:
        return spelled[1]
    # redis-py 8 keeps the code it stripped (NOAUTH and WRONGPASS are both AuthenticationError).
    kept: str | None = getattr(error, "status_code", None)
    return kept


def reply_from_code(error: BaseException, code: str) -> str:
    """The server's reply from its code on: without a script's wrapper, with the code redis-py stripped."""
    message = str(error)
    spelled = _SPELLED_CODE.search(message)
    return message[spelled.start(1) :] if spelled is not None and spelled[1] == code else f"{code} {message}"


def acl_refusal(error: BaseException) -> str | None:
    """What the server said when its ACL refused a command, key or channel; None for another error."""
    message = str(error)
    if error_code(error) == "NOPERM":
        return message
    for phrase in _REFUSED_IN_SCRIPT:
        if phrase in message:
            return message[message.index(phrase) :]
    return None


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the server cannot serve locks now (trying again later may work)."""
    return isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError) or (
        error_code(error) in UNAVAILABLE_REPLIES
    )


def count_failure(error: BaseException) -> None:
    """Count a Redis failure in the metrics by its kind (``telemetry.ERROR_TYPE``), never its message."""
    telemetry.record_redis_error(_failure_kind(error))


def _failure_kind(error: BaseException) -> str:
    code = error_code(error)
    if isinstance(error, redis.AuthenticationError) or code == "NOAUTH":
        return "authentication"
    if code in UNAVAILABLE_REPLIES:
        return str(code).lower()
    if isinstance(error, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, redis.ConnectionError | OSError):
        return "connection"
    if isinstance(error, redis.InvalidResponse):
        return "protocol"
    return "other"
