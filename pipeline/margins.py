"""The margins stage: `sept.clap.margins` computes them with the CLAP text encoder.

The formula lives with the CLAP adapter because the trainer recomputes margins too (a
read-only store, a new checkpoint), and the trainer does not import the pipeline.
"""
from sept.clap.margins import compute_margins, encode_templated, margins_from_embeddings

__all__ = ["compute_margins", "encode_templated", "margins_from_embeddings"]
