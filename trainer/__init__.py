"""CLAP prompt tuning with SEPT.

    backbone.py     the one LAION-CLAP loader (frozen encoders, prompt-token path)
    data.py         PALM-layout datasets, few-shot sampling, base-to-new splits
    audio_cache.py  audio embeddings computed once per clip, cached on disk
    learners.py     zero-shot, CoOp, CoCoOp, KgCoOp, PALM: texts -> joint-space embeddings
    sept_loss.py    L_intra / L_inter hinge terms, neighbor budget sampling
    metrics.py      accuracy, macro-F1, Base/New/H, seed summaries
    config.py       TrainConfig (defaults from PALM), YAML + key=value overrides
    train.py        the loop: train, checkpoints, resume, evaluation, transfer
    cli.py          `sept train`, `sept eval`
"""
