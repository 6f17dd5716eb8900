"""LightLM TUI: the Textual app. A view over the engine; never imports torch at import time."""

__version__ = "0.1.0"
