"""Weight files: `loading` (load_checkpoint and the strict build), `single_file` (the
official single file), `diffusers_folder` (a diffusers folder), `versions` (version
detection, the configs a file carries), `tensors` (safetensors headers, NaN/Inf checks),
`keymaps` (prefixes and name maps), `writing` (the official single file out),
`quantized` (FP8 and GGUF weights kept quantized: format detection, `QuantizedWeight`),
`gguf_checkpoint` (a GGUF transformer as a checkpoint; `gguf_file`, `gguf_quants`,
`gguf_writing` read, decode and write the GGUF format).
"""
