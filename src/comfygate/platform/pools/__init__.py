"""Worker pools: the name a workflow version runs on, what each pool's workers report their engine offers
(reporter.py, on the worker), the node schemas uploads and runs for a pool are checked against (schemas.py),
and the list of pools (listing.py)."""

from __future__ import annotations

from .listing import list_pools, reported_pools
from .names import DEFAULT_POOL, POOL_NAME, check_pool_name
from .reporter import CapabilityReporter, capabilities_digest, publish_capabilities
from .schemas import PoolSchemas, registry_schemas, schemas_for_pool

__all__ = ["DEFAULT_POOL", "POOL_NAME", "CapabilityReporter", "PoolSchemas", "capabilities_digest",
           "check_pool_name", "list_pools", "publish_capabilities", "registry_schemas", "reported_pools",
           "schemas_for_pool"]
