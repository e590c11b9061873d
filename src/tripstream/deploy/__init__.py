"""Deployment bundles for running tripstream's jobs outside the local stack (Kubernetes: :mod:`.k8s`)."""
