"""Several GPUs: Ulysses sequence parallelism and CFG parallelism for the DiT (`distributed`),
the VAE decode split along time across ranks (`split_decode`), and the collectives both call
through (`collectives`)."""
