"""What is done with a trained run: sampling text (generate.py), the Hugging Face and peft
export (hf_export.py), and the GGUF file llama.cpp runs (gguf_export.py). Each opens the run
through engine.runs.trained_run.

Import submodules directly; this package loads nothing itself.
"""
