"""Models are loaded once per worker process, not once per task: the property the Dask task
runner relies on (tasks of one worker share its process)."""
from __future__ import annotations

import os


def test_sentence_model_is_loaded_once_per_dask_worker_process():
    from dask.distributed import Client, LocalCluster

    def probe(_):
        # runs inside a worker process: which process, and which model object it got
        from sept.pipeline.models import get_sentence_model

        return os.getpid(), id(get_sentence_model())

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        results = client.gather(client.map(probe, range(12), pure=False))
        worker_pids = set(client.run(os.getpid).values())
    models_per_pid: dict[int, set[int]] = {}
    for pid, model_id in results:
        models_per_pid.setdefault(pid, set()).add(model_id)
    assert set(models_per_pid) <= worker_pids and os.getpid() not in models_per_pid
    assert all(len(ids) == 1 for ids in models_per_pid.values()), models_per_pid


def test_sentence_model_and_backbone_are_shared_within_a_process(backbone, clap_checkpoint, clap_tokenizer_dir):
    from sept.clap import get_backbone, keep_backbone
    from sept.pipeline.models import get_sentence_model

    assert get_sentence_model() is get_sentence_model(None)
    keep_backbone(backbone)
    assert get_backbone(clap_checkpoint, tokenizer=clap_tokenizer_dir) is backbone
