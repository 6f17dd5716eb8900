"""LightLM engine: everything that trains. Imports no UI code; usable headless and under torchrun.

Import submodules directly (`engine.config`, `engine.model.transformer`, ...): importing `engine` alone
loads nothing heavy, so the UI can use the config layer without pulling in torch.
"""

__version__ = "0.1.0"
