"""Procedural scenes with exact metric depth, calibrated stacks rendered from them, and dataset manifests."""
