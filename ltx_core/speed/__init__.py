"""GPU speed, plugged in through the transformer's seams: regional compile, CUDA graphs,
the attention backend, FP8 linear layers and the fused kernels (QK-norm + RoPE; the blocks'
modulated norms and gated residuals).
"""
