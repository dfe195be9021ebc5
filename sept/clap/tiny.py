"""Stand-ins for downloaded files, written to disk so tests and the offline demo load them
through the same path users take (`sept.clap.load_backbone`):

- `write_tokenizer(dir)`: a byte-level BPE with RoBERTa's special tokens, in place of
  roberta-base's vocab.json + merges.txt;
- `write_random_checkpoint(path)`: a random-weight LAION-CLAP checkpoint in the official format.
"""
from __future__ import annotations

from pathlib import Path

import torch

from sept.atomic import atomic_save

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]   # ids 0-4, as in roberta-base

_SOUNDS = """
dog bark barking puppy whimper growl cat meow purr hiss rooster crow cow moo pig oink sheep bleat
frog croak insects cricket chirp bird birds chirping song hen crow owl hoot rain drizzle storm thunder
wind howling sea waves ocean crackling fire water drops dripping pouring toilet flush stream river
crying baby sneezing clapping applause breathing coughing footsteps laughing laughter brushing teeth
snoring drinking sipping door knock wood creaks mouse click keyboard typing can opening washing
machine vacuum cleaner clock alarm tick glass breaking helicopter chainsaw siren car horn engine
train church bells airplane fireworks hand saw gun shot jackhammer drilling street music children
playing air conditioner idling motorcycle truck bus tram metro station park airport shopping mall
street traffic pedestrian public square cafe restaurant home office library beach forest lakeside
guitar piano violin drum drums flute trumpet saxophone cello bass organ harp singing voice speech
speaking talking whisper shout scream buzz hum beep ring ringtone whistle squeak rattle rumble roar
pitch high low loud quiet soft deep sharp metallic hollow muffled distant close echo reverb noisy
""".split()
_ADJECTIVES = "loud soft distant nearby sharp deep high-pitched low-pitched muffled rhythmic steady short long".split()
_TEMPLATES = [
    "a sound of a {}.", "this is the sound of {}.", "a recording of {}.", "the sound of the {}.",
    "a {} can be heard.", "an audio clip of {}.", "we hear {} in the background.", "a photo of a {}.",
]


def _corpus() -> list[str]:
    lines = [template.format(word) for template in _TEMPLATES for word in _SOUNDS]
    lines += [f"a {adj} {word}" for adj in _ADJECTIVES for word in _SOUNDS]
    lines += [" ".join(_SOUNDS[i:i + 12]) for i in range(0, len(_SOUNDS), 6)]
    lines += ["Acoustic scene: City Center, Cafe/Restaurant, Metro Station; Cough, Sneeze, Dog_Bark! 0123456789"]
    return lines


def write_tokenizer(directory: str | Path, vocab_size: int = 2000) -> Path:
    """Train a byte-level BPE (about a second) and write vocab.json + merges.txt into `directory`.

    Loadable by transformers' RobertaTokenizer; specials <s>,<pad>,</s>,<unk>,<mask> get ids 0-4
    like roberta-base, and the vocabulary fits CLAP's 50265-row embedding.
    """
    from tokenizers import ByteLevelBPETokenizer

    if vocab_size > 50265:
        raise ValueError(f"vocab_size {vocab_size} exceeds CLAP's RoBERTa vocabulary (50265)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(_corpus(), vocab_size=vocab_size, min_frequency=1,
                                  special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.save_model(str(directory))
    return directory


def write_random_checkpoint(path: str | Path, amodel: str = "HTSAT-tiny", enable_fusion: bool = False,
                            seed: int = 0) -> Path:
    """Write a random-weight LAION-CLAP checkpoint in the official format.

    {"state_dict": {"module." + key: tensor}}, including text_branch.embeddings.position_ids as
    the released checkpoints do (laion-clap's own `load_ckpt` deletes that key unconditionally).
    About 630 MB for HTSAT-tiny. The write is atomic; the same arguments give the same bytes.
    """
    from sept.clap.factory import ROBERTA_BASE, build_clap

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _ = build_clap(amodel, enable_fusion, "cpu")
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(ROBERTA_BASE["max_position_embeddings"])[None]
    path = Path(path)

    def save(tmp: Path) -> None:
        # Through a file object, so the archive's inner folder name is fixed, not taken from the
        # (per-process) temp name: one seed gives the same bytes, hence the same fingerprint.
        with open(tmp, "wb") as f:
            torch.save({"state_dict": state}, f)

    atomic_save(path, save)
    return path
