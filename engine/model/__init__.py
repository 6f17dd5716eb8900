"""The model: the transformer, its attention policy, cross-entropy, KV cache, sampling, the
Hugging Face mapping and the size estimates (parameters, FLOPs, memory).

Import submodules directly: `engine.model.estimates` and `engine.model.attention_policy` are
pure arithmetic the UI reads without loading torch, so this package loads nothing itself.
"""
