"""Where a service runs: Local (Docker or a process), ACI, Kubernetes (AKS). One module per target."""

from cloud_targets.targets.base import ServiceSpec

__all__ = ["ServiceSpec"]
