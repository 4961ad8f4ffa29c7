"""The Acme plugin against video-runner's conformance kit, run against its own simulator."""

from runner.testing import FailureCase, ProviderConformance
from runner_acme import Acme


class TestAcmeConformance(ProviderConformance):
    provider_class = Acme
    # Acme reports moderation as final and its own faults as worth another try.
    failure_cases = (
        FailureCase("SAFETY.INPUT.TEXT", "permanent", "Input did not pass moderation"),
        FailureCase("INTERNAL", "retryable"),
    )
