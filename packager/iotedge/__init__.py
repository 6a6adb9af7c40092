"""IoT Edge: deployment manifests (generate, validate), applying them, and running them locally."""
