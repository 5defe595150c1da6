"""Training of the tiny shipped demo model with the paper's recipe (issue 5).

data.py: captioned synthetic clips, tokenizer.py + t5.py: the text encoder, losses.py:
VAE losses, train_vae.py and train_dit.py: the two training loops.
Nothing here is imported at inference time.
"""
