"""CLAP prompt tuning with SEPT: one training run (the sweeps over many runs are sept.sweeps).

    data.py           PALM-layout datasets, few-shot sampling, base-to-new splits
    data_check.py     `sept data check`: the 11 benchmark datasets on disk
    fewshot.py        few-shot split files: a run's fewshot.json, fewshot_file, `sept data fewshot`
    audio_cache.py    audio embeddings (and log-mels) computed once per clip, cached on disk
    audio_prompts.py  ASPL: FiLM inside the frozen HTSAT audio encoder
    learners.py       zero-shot, CoOp, CoCoOp, KgCoOp, PALM, DePT: texts -> joint-space embeddings,
                      and each learner's step loss, SEPT embeddings and evaluation logits
    sept_loss.py      L_intra / L_inter hinge terms, neighbor budget sampling
    metrics.py        accuracy, macro-F1, Base/New/H, seed summaries
    config.py         TrainConfig (defaults from PALM), YAML + key=value overrides, config_hash
    checkpoints.py    run checkpoints with RNG state; safe loading; resume checks
    progress.py       the Rich progress display of one run
    errors.py         TrainError
    train.py          the program: train, run_epoch, evaluation, evaluate_run
    cli.py            `sept train`, `sept eval`, `sept data check`
"""
