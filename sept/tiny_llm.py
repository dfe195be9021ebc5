"""Build a tiny local chat model that vLLM can serve: a 2-layer Llama (hidden 64, 2 heads of
width 32), a byte-level BPE tokenizer with a chat template, trained for a few hundred CPU steps
on made-up "neighbor prompt -> JSON reply" pairs so that its replies are JSON that closes.

It is a test and demo fixture, not a useful model: it knows the shape of the answer, not sounds.

    python -m sept.tiny_llm OUT_DIR        # build into OUT_DIR
    python -m sept.tiny_llm --cached       # build once into <cache root>/tiny-llm/<hash>, print the path

The cache root is $SEPT_CACHE, else $SEPT_HOME (default ./.sept). The cached folder is keyed by
the hash of this module and of the generation prompts it trains on, so every machine builds it
once. Deterministic for a given seed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
KINDS = ["synonym", "paraphrase", "acoustic", "subtype"]
SOURCES = ["dog", "cat", "rain", "engine", "siren", "bird", "clock", "door", "train", "baby", "cough",
           "wind", "sea waves", "church bells", "keyboard", "vacuum cleaner", "helicopter", "chainsaw",
           "rooster", "frog", "crickets", "thunder", "footsteps", "laughing", "sneezing", "airplane",
           "car horn", "glass breaking", "water drops", "fireworks", "metro station", "street traffic",
           "park", "cafe/restaurant", "home", "bus", "tram", "city center", "Cough", "Sneeze", "Música"]
ADJECTIVES = ["loud", "soft", "distant", "close", "high-pitched", "low", "rhythmic", "sharp", "muffled",
              "echoing", "steady", "sudden", "repeated", "gentle", "harsh", "rumbling", "crisp", "faint"]
NOUNS = ["sound", "noise", "call", "clatter", "hum", "buzz", "chirp", "bang", "whistle", "rattle",
         "splash", "tapping", "ringing", "murmur", "roar", "squeak", "thud", "hiss"]
SETTINGS = ["indoors", "outdoors", "at night", "in a room", "on the street", "far away", "nearby",
            "in the rain", "in a hall", "at home"]


def content_hash() -> str:
    from sept import prompts

    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in sorted((Path(prompts.__file__).parent / "generation").glob("*.yaml")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def default_cache_root() -> Path:
    from sept.home import sept_home

    root = os.environ.get("SEPT_CACHE")
    return Path(root) if root else sept_home()


def neighbor_text(rng: random.Random, source: str) -> str:
    pattern = rng.randrange(5)
    adj, noun, where = rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(SETTINGS)
    if pattern == 0:
        return f"{adj} {source} {noun}"
    if pattern == 1:
        return f"{source} {noun} {where}"
    if pattern == 2:
        return f"{adj} {noun} of a {source}"
    if pattern == 3:
        return f"{adj} {source}"
    return f"{source} {noun}"


def examples(n: int, seed: int) -> list[tuple[list[dict], str]]:
    """n (messages, reply) pairs: real generation prompts rendered on made-up class lists."""
    from sept.prompts import list_prompts, load_prompt

    prompts = [load_prompt(p) for p in list_prompts()]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = rng.choice(prompts)
        classes = rng.sample(SOURCES, rng.randint(2, min(20, len(SOURCES))))
        target = rng.choice(classes)
        want = rng.randint(2, 12)
        user = prompt.render(dataset=rng.choice(["esc50", "tut2017", "demo", "beijing_opera"]),
                             class_name=target, classes=classes, n=want, n_ask=want)
        items = [{"text": neighbor_text(rng, target), "kind": rng.choice(KINDS)} for _ in range(rng.randint(2, 6))]
        reply = json.dumps({"neighbors": items}, ensure_ascii=False)
        out.append(([{"role": "system", "content": prompt.system}, {"role": "user", "content": user}], reply))
    return out


def build_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|end|>",
                                   pad_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out_dir: Path, seed: int = 0, steps: int = 150, batch: int = 8, verbose: bool = True) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    t0 = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = examples(600, seed)
    corpus = []
    for messages, reply in data[:200]:
        corpus += [m["content"] for m in messages] + [reply]
    tokenizer = build_tokenizer(corpus, vocab_size=1024)
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    # Loss on the reply only: the model must learn to write the JSON and stop, not the prompts.
    rows = []
    for messages, reply in data:
        prefix = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [end_id]
        rows.append((p_ids + r_ids, [-100] * len(p_ids) + r_ids))

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=pad_id, eos_token_id=end_id, pad_token_id=pad_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=steps, pct_start=0.1)
    rng = random.Random(seed + 1)
    model.train()
    for step in range(steps):
        chunk = [rows[rng.randrange(len(rows))] for _ in range(batch)]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((batch, width), pad_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for i, (x, y) in enumerate(chunk):
            ids[i, : len(x)] = torch.tensor(x)
            labels[i, : len(y)] = torch.tensor(y)
            mask[i, : len(x)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if verbose and (step % 25 == 0 or step == steps - 1):
            print(f"step {step:4d} loss {loss.item():.3f} ({time.time() - t0:.1f}s)", flush=True)

    model.eval()
    model.generation_config = GenerationConfig(bos_token_id=pad_id, eos_token_id=end_id, pad_token_id=pad_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "sept-tiny-llm.json").write_text(json.dumps({"seed": seed, "steps": steps, "hash": content_hash(),
                                                            "final_loss": round(loss.item(), 4)}, indent=1))
    if verbose:
        print(f"built tiny LLM in {time.time() - t0:.1f}s -> {out_dir}", flush=True)
    return out_dir


def check(out_dir: Path) -> str:
    """Greedy free generation (no structured output) for one prompt; returns the reply text."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from sept.prompts import load_prompt

    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = LlamaForCausalLM.from_pretrained(out_dir).eval()
    prompt = load_prompt("default")
    messages = [{"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.render(dataset="esc50", class_name="dog",
                                                          classes=["dog", "rain", "cafe/restaurant"], n=5, n_ask=8)}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=300, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def cached(cache_root: Path | None = None, verbose: bool = True) -> Path:
    """The tiny model folder under `<cache_root>/tiny-llm/<hash>`, built once (atomically)."""
    root = (cache_root or default_cache_root()) / "tiny-llm"
    target = root / content_hash()
    if (target / "sept-tiny-llm.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        build(tmp, verbose=verbose)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "sept-tiny-llm.json").is_file():
                raise
            # another process built it meanwhile; theirs is identical
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m sept.tiny_llm", description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", type=Path, help="build into this folder")
    ap.add_argument("--cached", action="store_true", help="build once into <cache-root>/tiny-llm/<hash>; print its path")
    ap.add_argument("--cache-root", type=Path, default=None, help="default: $SEPT_CACHE, else $SEPT_HOME or ./.sept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--check", action="store_true", help="print one greedy reply of the built model")
    args = ap.parse_args()
    if args.cached or args.out_dir is None:
        out = cached(args.cache_root)
    else:
        out = build(args.out_dir, seed=args.seed, steps=args.steps)
    if args.check:
        print(check(out))
    print(out)


if __name__ == "__main__":
    main()
