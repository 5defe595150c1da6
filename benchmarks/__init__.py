"""Benchmarks a user or reviewer runs, each as `python -m benchmarks.NAME` from the repository
root; the latest result of each lies in `benchmarks/results/`, its history in git. Among them:

- `bench_cpu_demo`: the README's demo clip with the shipped tiny model on CPU, by stage;
- `bench_gpu_speed`: our pipeline against diffusers' LTXPipeline on one GPU (2B, random weights);
- `bench_multi_gpu`: one video on 1, 2 and 4 GPUs (`ltx_core.parallel.distributed`);
- `bench_decode_chunks`: the eager VAE decode on a GPU, whole against time-chunked layers;
- `vae_decode_memory`: the VAE decode's peak activation memory, whole against time-chunked;
- `memory_planner`: `ltx_core.memory_plan`'s estimates against measured peaks (CPU, meta, CUDA);
- `cli_startup`: how long the command line takes to answer `--version`, a bad flag, and the demo;
- `gpu_speed_pipelines`, `gpu_kernel_rates`: the two pipelines and the kernel readings
  `bench_gpu_speed` times;
- `gpu_measure`: timing and memory helpers the GPU benchmarks share.

The tiny model's evaluation and selection tools live in `ltx_core.training.evaluation`.
"""
