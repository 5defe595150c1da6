"""Training of the tiny shipped demo model with the paper's recipe.

data.py: synthetic clips, captions.py: their captions in many forms (and a reader of
prompts in their words), tokenizer.py + t5.py: the text encoder, train_text.py: its
training on the captions, losses.py: VAE losses, train_vae.py and train_dit.py: the VAE
and DiT training loops, demo_model.py: the shipped model's configs and file, run_tiny.py:
one call that trains and exports it (run_text.py: the text encoder's part), analysis.py:
what a generated clip shows. evaluation/: the evaluation and selection tools and the
shipped model's latest results. RECIPE.md: the run_tiny calls that made the shipped
model; tiny_training_log.txt: their log.
Nothing here is imported at inference time.
"""
