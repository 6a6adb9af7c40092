"""Azure Container Instances: one container group per service (azure-mgmt-containerinstance, azure-identity).

Importing this package needs no Azure packages; they are imported when a group is built or ARM is called
(``pip install 'edgepack[cloud]'``).
"""

from cloud_targets.targets.aci.client import FAILED, HEALTHY, TRANSITIONING, UNHEALTHY, AciTarget, group_state
from cloud_targets.targets.aci.group import GroupPlan, container_group, container_group_plan, unsupported_settings

__all__ = [
    "FAILED",
    "HEALTHY",
    "TRANSITIONING",
    "UNHEALTHY",
    "AciTarget",
    "GroupPlan",
    "container_group",
    "container_group_plan",
    "group_state",
    "unsupported_settings",
]
