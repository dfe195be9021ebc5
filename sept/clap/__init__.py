"""LAION-CLAP for both sides of sept: the pipeline's filter and margins, and the trainer.

Split as open_clip splits its model side:

- `factory`: building and loading (hub-free laion-clap, checkpoint formats, tokenizer
  discovery, fingerprint, one load per process);
- `audio`: audio input (decode, mono, resample to 48 kHz, log-mel);
- `model`: the frozen `ClapBackbone` with `encode_text`, `encode_audio` and the
  prompt-token path;
- `margins`: SEPT margins from the text encoder and manual templates;
- `cli`: `sept clap convert`, a pickled checkpoint rewritten once as safetensors;
- `tiny`: random-weight checkpoints and a stand-in tokenizer for tests and the offline demo.
"""
from sept.clap.audio import CLIP_SAMPLES, CROP_MODES, SAMPLE_RATE, mel_spectrogram, read_audio, to_clap_rate, to_mono
from sept.clap.factory import (
    ROBERTA_BASE, TOKENIZER_ENV, TOKENIZER_FILES, BackboneError, BackboneFileError, UntrustedCheckpointError,
    build_clap, convert_checkpoint, file_sha256, find_tokenizer_dir, fingerprint, get_backbone, import_laion_clap,
    keep_backbone, load_backbone, load_checkpoint_into, load_tokenizer, offline_hub, read_checkpoint,
)
from sept.clap.model import CONTEXT_LENGTH, ClapBackbone

__all__ = [
    "CLIP_SAMPLES", "CONTEXT_LENGTH", "CROP_MODES", "ROBERTA_BASE", "SAMPLE_RATE", "TOKENIZER_ENV",
    "TOKENIZER_FILES", "BackboneError", "BackboneFileError", "ClapBackbone", "UntrustedCheckpointError",
    "build_clap", "convert_checkpoint", "file_sha256", "find_tokenizer_dir", "fingerprint", "get_backbone",
    "import_laion_clap", "keep_backbone", "load_backbone", "load_checkpoint_into", "load_tokenizer",
    "mel_spectrogram", "offline_hub", "read_audio", "read_checkpoint", "to_clap_rate", "to_mono",
]
