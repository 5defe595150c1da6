"""From noise to a clean latent: the shifted flow scheduler (paper 2.5), conditioning by
per-token timesteps (2.4), guidance (CFG, STG), the denoising loop and its Euler steps.
"""
