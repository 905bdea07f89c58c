"""minivm: turn a Docker image into a small QEMU VM and a GNS3 appliance."""

__version__ = "0.1.0"
