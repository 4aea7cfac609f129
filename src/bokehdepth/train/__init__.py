"""Training loops (accelerate): Stage-1 generators/adapters, Stage-2 depth models, the Bokeh Diffusion adapter."""
