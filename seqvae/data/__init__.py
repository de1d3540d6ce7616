"""Text in: corpora, tokenizers, batching, and the embedded synthetic corpus."""
