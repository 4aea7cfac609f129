"""Models: DSFA, Depth Anything V2 + DSFA, UniDepthV2 + DSFA, the FLUX adapters and the compact defaults.

Heavy dependencies (transformers, diffusers) are imported inside the modules that need them.
"""
