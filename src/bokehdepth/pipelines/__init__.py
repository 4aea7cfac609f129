"""Pipelines: Stage-1 stack generation, Stage-2 depth, the end-to-end BokehDepth run, text-to-image."""
