"""End to end through a real Prefect server and worker (tests/fixtures_prefect.py), the real
`prefect deployment run ... --watch` CLI, and the real vLLM server serving the tiny model."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from sept.flows.demo import run_deployment
from sept.neighbor_store import RefError, Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = "generate-neighbors/vllm-local"


def run(stack, params: dict, timeout: float = 400) -> tuple[int, str]:
    """The user's command, `prefect deployment run '<DEPLOYMENT>' --param k=v ... --watch`."""
    lines: list[str] = []
    code, out = run_deployment(stack, DEPLOYMENT, params, timeout, echo=lines.append)
    return code, out


def summary(out: str) -> dict:
    found = re.findall(r"summary (\{.*?\})\s*$", out, flags=re.M)
    assert found, f"no summary line in the run's output:\n{out[-4000:]}"
    return json.loads(found[-1])


def new_ref(out: str) -> str:
    found = re.findall(r"new version: (\S+)", out)
    assert found, f"no version reported:\n{out[-4000:]}"
    return found[-1]


def cost_line(out: str) -> dict:
    found = re.findall(r"cost: \S+ \S+: (\d+) requests \((\d+) retries\), (\d+) response cache hits, "
                       r"(\d+) prompt \+ (\d+) completion tokens", out)
    assert found, f"no cost line in the run's output:\n{out[-4000:]}"
    keys = ("requests", "retries", "response_cache_hits", "prompt_tokens", "completion_tokens")
    return dict(zip(keys, map(int, found[-1])))


def vllm_requests(base_url: str) -> float:
    """Requests the real vLLM server finished, from its Prometheus metrics."""
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, flags=re.M))


def store_of(stack) -> Store:
    return Store(stack.deploy_env()["SEPT_STORE"])


def verify(stack, ref: str) -> None:
    res = subprocess.run([sys.executable, "-m", "sept", "store", "--store", stack.deploy_env()["SEPT_STORE"],
                          "verify", ref], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, f"sept store verify {ref} failed:\n{res.stdout}\n{res.stderr}"
    assert "ok" in res.stdout


def test_deployment_run_writes_a_verified_version_and_a_rerun_makes_no_request(prefect_stack, vllm_server):
    before = vllm_requests(vllm_server.base_url)
    code, out = run(prefect_stack, {"dataset": "beijing-opera"})
    assert code == 0, out[-4000:]
    ref = new_ref(out)
    first = summary(out)
    after_first = vllm_requests(vllm_server.base_url)
    assert first["requests"] >= 4 and first["task_cache_hits"] == 0
    assert after_first - before == first["requests"], "the summary's request count disagrees with the server"
    logged = cost_line(out)  # what the generation cost, logged and kept in the manifest
    assert logged["requests"] == first["requests"] and logged["prompt_tokens"] > 0 and logged["completion_tokens"] > 0

    verify(prefect_stack, ref)
    store = store_of(prefect_stack)
    version = store.read(ref)
    assert version.classes == ["bangu", "daluo", "naobo", "xiaoluo"]
    assert version.manifest["params"]["backend"] == "vllm"
    [cost] = version.manifest["cost"]
    assert {k: cost[k] for k in logged} == logged and cost["backend"] == "vllm" and cost["wall_seconds"] > 0
    fingerprint = version.manifest["params"]["margins"]["fingerprint"]
    margins = store.read_margins(ref, fingerprint)
    assert margins is not None and tuple(margins.values.shape) == (4, len(version.neighbors))

    code, out = run(prefect_stack, {"dataset": "beijing-opera"})
    assert code == 0, out[-4000:]
    again = summary(out)
    assert again["requests"] == 0 and again["task_cache_hits"] == 4
    assert cost_line(out) == {"requests": 0, "retries": 0, "response_cache_hits": 0, "prompt_tokens": 0,
                              "completion_tokens": 0}  # every class came from the task cache
    assert vllm_requests(vllm_server.base_url) == after_first, "the re-run sent requests to the LLM server"
    assert new_ref(out) == ref  # same inputs, same content: the same version
    assert len(store.list("beijing-opera")) == 1


def test_a_class_that_only_gets_garbage_fails_the_run_and_writes_nothing(prefect_stack, fault_server):
    fault_server.script("mostly silence", ["not_json"] * 100)
    code, out = run(prefect_stack, {
        "dataset": "faulty-set",
        "classes": json.dumps(["door knock", "mostly silence"]),
        "base_url": fault_server.base_url,
        "model": "stand-in",
        "clap_checkpoint": "null",
        "max_attempts": "2",
        "task_retries": "1",
        "retry_delay_seconds": "0.5",
    })
    assert code != 0, out[-4000:]
    assert "'mostly silence'" in out and "no version written" in out
    assert "not_json" in out or "JSON" in out, "the failure does not say why"
    # 2 attempts per task run, 1 retry of the task
    assert fault_server.count_for("mostly silence") == 4
    assert "faulty-set" not in store_of(prefect_stack).datasets()
    with pytest.raises(RefError):
        store_of(prefect_stack).list("faulty-set")


def test_wrong_parameters_fail_the_run_with_the_reason(prefect_stack):
    code, out = run(prefect_stack, {"dataset": "beijing-opera", "n_per_class": "0", "backend": '"nope"'})
    assert code != 0
    assert "n_per_class" in out and "greater than or equal to 1" in out
    assert "backend" in out and "nope" in out

    # a value of the wrong type is refused by the server before any run starts
    code, out = run(prefect_stack, {"dataset": "beijing-opera", "n_per_class": '"many"'})
    assert code != 0 and "n_per_class" in out


def test_two_datasets_at_once_both_land_intact(prefect_stack):
    outcomes: dict[str, tuple[int, str]] = {}

    # any PipelineConfig field is a flow parameter (here a dedup option `sept generate` has too)
    extra = {"sesa": {"dedup_word_threshold": "0.8"}, "crema-d": {}}

    def go(dataset: str) -> None:
        outcomes[dataset] = run(prefect_stack, {"dataset": dataset, "clap_checkpoint": "null", **extra[dataset]})

    threads = [threading.Thread(target=go, args=(d,)) for d in ("sesa", "crema-d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    store = store_of(prefect_stack)
    for dataset, n_classes in (("sesa", 4), ("crema-d", 6)):
        code, out = outcomes[dataset]
        assert code == 0, out[-4000:]
        ref = new_ref(out)
        verify(prefect_stack, ref)
        version = store.read(ref)
        assert version.dataset == dataset and len(version.classes) == n_classes
        assert {n.class_ for n in version.neighbors} <= set(version.classes)
        assert version.manifest["params"]["clap"].startswith("skipped")
        assert version.manifest["params"]["dedup"]["word_threshold"] == (0.8 if dataset == "sesa" else 0.815)
        assert len(store.list(dataset)) == 1


def test_dask_task_runner_with_a_two_worker_local_cluster(prefect_stack, vllm_server, tmp_path):
    store = tmp_path / "store"
    script = (
        "from sept.flows.generate import generate_neighbors\n"
        f"ref = generate_neighbors(dataset='dask-set', classes=['rain', 'thunder', 'wind'], backend='vllm',\n"
        f"    model={vllm_server.model!r}, base_url={vllm_server.base_url!r}, store={str(store)!r},\n"
        f"    cache_dir={str(tmp_path / 'llm-cache')!r}, task_runner='dask', dask_workers=2)\n"
        "print('REF', ref)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=prefect_stack.env(), capture_output=True,
                         text=True, timeout=400)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "LocalCluster" in out, "the Dask task runner was not used"
    assert re.search(r"task runner dask", out)
    ref = re.findall(r"^REF (\S+)$", res.stdout, flags=re.M)[-1]
    version = Store(store).read(ref)
    assert version.classes == ["rain", "thunder", "wind"] and version.neighbors
    assert summary(out)["requests"] >= 3


def test_compute_margins_deployment_attaches_margins_to_an_existing_version(prefect_stack):
    from sept.neighbor_store.records import NeighborRecord, neighbor_id

    store = store_of(prefect_stack)
    classes = ["dog", "cafe/restaurant"]
    texts = {"dog": ["barking", "a puppy yelping"], "cafe/restaurant": ["cups clinking"]}
    neighbors = [NeighborRecord(class_=c, text=t, id=neighbor_id(c, t)) for c in classes for t in texts[c]]
    ref = store.write_version(dataset="margins-set", classes=classes, neighbors=neighbors, message="by hand")
    assert store.margin_fingerprints(ref) == []

    code, out = run_deployment(prefect_stack, "compute-margins/default", {"ref": ref}, 300, echo=lambda _: None)
    assert code == 0, out[-4000:]
    fingerprint = re.findall(r"under encoder (\w+)", out)[-1]
    assert store.margin_fingerprints(ref) == [fingerprint]
    margins = store.read_margins(ref, fingerprint)
    assert margins is not None and tuple(margins.values.shape) == (2, 3)
    assert margins.neighbor_ids == [n.id for n in store.read(ref).neighbors]
    verify(prefect_stack, ref)
