"""Evaluation and selection of the tiny demo model, each module runnable as
`python -m ltx_core.training.evaluation.NAME`; the shipped model's latest results lie in
`results/` beside them (history in git), the findings behind its choices in docs/FINDINGS.md.

- `demo_eval`: text-to-video readings of the README's and workflows' prompts, held-out
  combinations and held-out sentence forms (both colors, shape, motion, swaps), and
  image-to-video, VAE and first + last frame readings of a checkpoint against the targets
  (results/demo_eval.json, benchmarks/results/demo_eval.json, docs/demo_strip.png);
  `prompts`: the shipped prompts it reads;
- `first_last_eval`: first + last frame conditioning alone, with the VAE's bounds beside it
  (results/first_last_eval*.json);
- `sampling_sweep`: sampling defaults (guidance, STG, steps) chosen on validation prompts,
  never on the held-out ones (results/sampling_sweep.json);
- `motion_screen`: the text-to-video reading of several checkpoints on many prompts, to
  rank candidates that a few dozen prompts cannot tell apart;
- `reader_check`: how often the clip reader (`training.analysis`) agrees with a person's
  labels of generated clips of the shipped model, and how often the clips show what was
  asked (labels in reader_labels.json, results/reader_check.json);
- `candidate_table`: candidates' `demo_eval` and `first_last_eval` results in one table
  beside the shipped model's, with each target's verdict.
"""
