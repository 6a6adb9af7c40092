"""Deployment targets (Local, ACI, AKS, IoT Hub): deploy and manage services and endpoints."""
