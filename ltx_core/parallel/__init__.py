"""Several GPUs: Ulysses sequence parallelism and CFG parallelism for the DiT, and the VAE decode split along time across ranks."""
