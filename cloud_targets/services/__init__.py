"""Web services deployed from a workspace: their persisted state (records, secrets, locks) and names."""

from cloud_targets.services.names import check_service_name
from cloud_targets.services.store import ServiceRecord, ServiceSecrets, ServiceStore

__all__ = ["ServiceRecord", "ServiceSecrets", "ServiceStore", "check_service_name"]
