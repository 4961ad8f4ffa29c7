"""What a failure code means at each provider: the message, fal's answer, and who pays for it.

Faults fate a task to fail with a Runway-style failure code (`SAFETY.INPUT.TEXT`, ...). Runway
shows the code as is; fal shows the same failure as its own error type and status code. Whether
the failed generation is billed follows each provider's published rules (docs/providers.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

#: Runway's failure messages by code family (most specific prefix first).
FAILURE_MESSAGES = (
    ("SAFETY.INPUT", "Input did not pass moderation"),
    ("SAFETY.OUTPUT", "Output did not pass moderation"),
    ("INPUT_PREPROCESSING.SAFETY", "Prompt text did not pass moderation"),
    ("INPUT_PREPROCESSING", "Input preprocessing failed"),
    ("INTERNAL.BAD_OUTPUT", "The generated output did not meet quality standards"),
    ("THIRD_PARTY.UNAVAILABLE", "The model provider is temporarily unavailable"),
    ("ASSET.INVALID", "An input asset is invalid"),
    ("INTERNAL", "An unexpected error occurred"),
)
#: Runway does not refund failures of these families: input moderation
#: (runwayml/skills, skills/rw-api-reference/SKILL.md, "Task Failure Codes").
RUNWAY_UNREFUNDED = ("SAFETY.INPUT",)


class FalFailure(NamedTuple):
    """How fal reports a failed generation: its error type, the result's status code, and whether
    retrying the same request may succeed (`X-Fal-Retryable`)."""

    error_type: str
    status: int
    retryable: bool

    @property
    def model_error(self) -> bool:
        """A model's error (a `detail` list) rather than the platform's (a flat `detail`)."""
        return self.error_type != "runner_server_error"

    @property
    def charged(self) -> bool:
        """fal never charges server errors (5xx); a 4xx model error may be charged
        (https://docs.fal.ai/faq, "Do you charge for failed requests?")."""
        return self.status < 500


#: By failure-code family (the part before the first dot).
_FAL = {
    "SAFETY": FalFailure("content_policy_violation", 422, False),
    "THIRD_PARTY": FalFailure("downstream_service_unavailable", 503, True),
    "INTERNAL": FalFailure("runner_server_error", 500, True),
}


def failure_message(code: str) -> str:
    """The human message Runway pairs with a failure code."""
    for prefix, message in FAILURE_MESSAGES:
        if _in_family(code, prefix):
            return message
    return "An unexpected error occurred"


def fal_failure(code: str | None) -> FalFailure:
    """fal's report of a generation fated to fail with `code` (unknown families: an internal error)."""
    return _FAL.get((code or "").split(".")[0], _FAL["INTERNAL"])


def runway_refunded(code: str | None, unrefunded: Iterable[str] = RUNWAY_UNREFUNDED) -> bool:
    """Whether Runway gives the credits of a task that failed with `code` back."""
    return not any(_in_family(code or "", prefix) for prefix in unrefunded)


def _in_family(code: str, prefix: str) -> bool:
    return code == prefix or code.startswith(prefix + ".")
