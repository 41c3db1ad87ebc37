"""Webhooks: the SSRF guard, Standard Webhooks signing, retry timing and the sender.

The messages themselves (endpoints, deliveries, attempts) live in the job store
(:mod:`cinecloud.jobs.webhooks`); the control plane's delivery loop joins the two.
"""

from cinecloud.webhooks.guard import (
    AllowList,
    HostsResolver,
    InvalidTarget,
    Resolver,
    Target,
    TargetForbidden,
    TargetUnresolvable,
    address_problem,
    check_target,
    parse_target,
    resolve_target,
    system_resolver,
)
from cinecloud.webhooks.retry import retry_delay
from cinecloud.webhooks.sender import AttemptResult, make_client, send_webhook
from cinecloud.webhooks.signing import SECRET_PREFIX, new_secret, signed_headers

__all__ = [
    "SECRET_PREFIX",
    "AllowList",
    "AttemptResult",
    "HostsResolver",
    "InvalidTarget",
    "Resolver",
    "Target",
    "TargetForbidden",
    "TargetUnresolvable",
    "address_problem",
    "check_target",
    "make_client",
    "new_secret",
    "parse_target",
    "resolve_target",
    "retry_delay",
    "send_webhook",
    "signed_headers",
    "system_resolver",
]
