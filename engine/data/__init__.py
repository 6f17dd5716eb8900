"""Text in, tokens out: corpora, tokenizers, the token store and the batch loader."""
