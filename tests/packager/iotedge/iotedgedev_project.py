"""An iotedgedev / VS Code IoT Edge solution folder, as those tools create it (nothing edgepack-specific)."""

from __future__ import annotations

import json
from pathlib import Path

SECRET = "pr0ject-Secret-pw"
INTO_FILTER = 'INTO BrokeredEndpoint("/modules/filter/inputs/input1")'

TEMPLATE = {
    "$schema-template": "4.0.0",
    "modulesContent": {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "runtime": {
                    "type": "docker",
                    "settings": {
                        "minDockerVersion": "v1.25",
                        "loggingOptions": "",
                        "registryCredentials": {
                            "myregistry": {
                                "username": "$CONTAINER_REGISTRY_USERNAME",
                                "password": "$CONTAINER_REGISTRY_PASSWORD",
                                "address": "${CONTAINER_REGISTRY_SERVER}",
                            }
                        },
                    },
                },
                "systemModules": {
                    "edgeAgent": {
                        "type": "docker",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5", "createOptions": {}},
                    },
                    "edgeHub": {
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {
                            "image": "mcr.microsoft.com/azureiotedge-hub:1.5",
                            "createOptions": {
                                "HostConfig": {
                                    "PortBindings": {
                                        "5671/tcp": [{"HostPort": "5671"}],
                                        "8883/tcp": [{"HostPort": "8883"}],
                                        "443/tcp": [{"HostPort": "443"}],
                                    }
                                }
                            },
                        },
                    },
                },
                "modules": {
                    "SampleModule": {
                        "version": "1.0",
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "settings": {"image": "${MODULES.SampleModule}", "createOptions": {}},
                    },
                    "filter": {
                        "version": "1.0",
                        "type": "docker",
                        "status": "running",
                        "restartPolicy": "always",
                        "env": {"LOG_LEVEL": {"value": "${LOG_LEVEL}"}},
                        "settings": {
                            "image": "${MODULES.filter.arm64v8}",
                            "createOptions": {"HostConfig": {"Binds": ["/data:/data"] * 40}},
                        },
                    },
                },
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": "1.1",
                "routes": {
                    "sampleToFilter": f"FROM /messages/modules/SampleModule/outputs/* {INTO_FILTER}",
                    "filterToUpstream": "FROM /messages/modules/filter/outputs/* INTO $upstream",
                },
                "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
            }
        },
        "filter": {"properties.desired": {"TemperatureThreshold": 25}},
    },
}


def module_json(name: str) -> dict:
    return {
        "$schema-version": "0.0.1",
        "description": "",
        "image": {
            "repository": f"${{CONTAINER_REGISTRY_SERVER}}/{name.lower()}",
            "tag": {
                "version": "0.0.1",
                "platforms": {"amd64": "./Dockerfile.amd64", "arm64v8": "./Dockerfile.arm64v8"},
            },
            "buildOptions": [],
            "contextPath": "./",
        },
        "language": "python",
    }


def make_project(root: Path, registry: str = "myregistry.azurecr.io") -> Path:
    """Write the solution: .env, deployment.template.json, modules/<name>/{module.json, Dockerfiles}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".env").write_text(
        "# iotedgedev settings\n"
        f"CONTAINER_REGISTRY_SERVER={registry}\n"
        "CONTAINER_REGISTRY_USERNAME=projuser\n"
        f'CONTAINER_REGISTRY_PASSWORD="{SECRET}"\n'
        "LOG_LEVEL=info  # comment\n"
    )
    (root / "deployment.template.json").write_text(json.dumps(TEMPLATE, indent=2))
    for name in ("SampleModule", "filter"):
        folder = root / "modules" / name
        folder.mkdir(parents=True)
        (folder / "module.json").write_text(json.dumps(module_json(name), indent=2))
        for arch in ("amd64", "arm64v8"):
            (folder / f"Dockerfile.{arch}").write_text(f"FROM {registry}/library/python:3.11-slim\nCOPY . /app\n")
    return root
