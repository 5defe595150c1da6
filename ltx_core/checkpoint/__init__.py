"""Weight files: `loading` (load_checkpoint and the strict build), `single_file` (the
official single file), `diffusers_folder` (a diffusers folder), `versions` (version
detection, the configs a file carries), `tensors` (safetensors headers, NaN/Inf checks),
`keymaps` (prefixes and name maps), `writing` (the official single file out).
"""
