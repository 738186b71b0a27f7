"""The container image every pipeline component runs in: the one place its name is written.

Built from ``components/Dockerfile``; a release bumps the tag here and recompiles the pipeline
(`smart-energy pipeline compile`).
"""

IMAGE = "ghcr.io/smart-energy/components:0.1.0"
