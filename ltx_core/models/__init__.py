"""The networks: the DiT (paper 2.2), the causal video VAE with its denoising decoder
(2.1), the T5 text encoder, RoPE, and the configs of every published version.
"""
