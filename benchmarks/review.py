"""The review page with 50 classes x 30 candidates (1,500 records: 20 accepted + 10 rejected per
class, three scores each), measured in a real headless chromium through Selenium.

- first render: navigation start -> the first frame painted with the class list and the first
  class's table (the page's own `performance.now()` stamps), over fresh page loads;
- class switch: `selectClass(i)` -> the next frame painted, for every class, with the rejected
  candidates hidden (20 rows) and shown (30 rows).

Goals on this machine: first render < 1 s, class switch < 100 ms. Prints the figures and their
ratio to the goal, side by side. `--screenshots DIR` also saves the page, its diff view and its
plots as PNGs (the README's pictures).

    python benchmarks/review.py [--classes 50] [--accepted 20] [--rejected 10] [--loads 5] [--screenshots docs]
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from sept.neighbor_store import NeighborRecord, Store  # noqa: E402
from sept.neighbor_store.review_web import ReviewApp, ReviewServer  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KINDS = ("synonym", "acoustic", "subtype", "paraphrase")
WORDS = ("distant", "muffled", "sharp", "rhythmic", "low", "bright", "short", "echoing", "soft", "harsh",
         "repeated", "metallic", "wet", "rustling", "steady", "sudden")
REASONS = ("clap_low_self", "duplicate_of:", "clap_confuser:", "invalid:too_long")


def esc50_classes(n: int) -> list[str]:
    path = Path(__file__).resolve().parents[1] / "pipeline" / "classlists" / "esc50.txt"
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return names[:n] if n <= len(names) else names + [f"class {i}" for i in range(len(names), n)]


def build_version(root: Path, n_classes: int, n_accepted: int, n_rejected: int) -> str:
    rng = random.Random(0)
    classes = esc50_classes(n_classes)
    neighbors, rejected = [], []
    for c in classes:
        for i in range(n_accepted + n_rejected):
            text = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {c} {i}"
            scores = {"clap_self": round(rng.uniform(0.2, 0.8), 4), "clap_best_other": round(rng.uniform(0.0, 0.5), 4),
                      "dedup_max": round(rng.uniform(0.1, 0.9), 4)}
            source = {"backend": "vllm", "model": "Qwen2.5-1.5B-Instruct", "prompt": "default@1a2b3c", "sample": i % 3}
            if i >= n_accepted:  # scores that fit the reason, as the CLAP filter would leave them
                reason = rng.choice(REASONS)
                if reason == "clap_low_self":
                    scores["clap_self"] = round(rng.uniform(0.0, 0.2), 4)
                elif reason == "clap_confuser:":
                    scores["clap_best_other"] = round(scores["clap_self"] + rng.uniform(0.05, 0.2), 4)
                elif reason == "duplicate_of:":
                    scores["dedup_max"] = round(rng.uniform(0.9, 1.0), 4)
            if i < n_accepted:
                neighbors.append(NeighborRecord(class_=c, text=text, kind=rng.choice(KINDS), scores=scores, source=source))
            else:
                if reason == "duplicate_of:":
                    reason += "%012x" % rng.getrandbits(48)
                elif reason == "clap_confuser:":
                    reason += rng.choice([o for o in classes if o != c])
                rejected.append(NeighborRecord(class_=c, text=text, kind=rng.choice(KINDS), scores=scores,
                                               source=source, status="rejected", reason=reason))
    return Store(root).write_version("esc50", classes, neighbors, rejected,
                                     params={"backend": "vllm", "model": "Qwen2.5-1.5B-Instruct"}, message="generated")


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("unhandledPromptBehavior", "accept")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_for(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(script)


def first_render(driver, url: str) -> tuple[float, float]:
    """(ms to the DOM being built, ms to the first painted frame), from navigation start."""
    driver.get("about:blank")
    driver.get(url)
    frame = wait_for(driver, "return window.septReview && window.septReview.state.timing.firstFrame")
    built = driver.execute_script("return window.septReview.state.timing.firstRender")
    return built, frame


SWITCH = """
const done = arguments[arguments.length - 1];
const t0 = performance.now();
window.septReview.selectClass(arguments[0]);
requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0)));
"""


def class_switches(driver, n_classes: int) -> list[float]:
    order = list(range(1, n_classes)) + list(range(n_classes - 2, -1, -1))
    return [driver.execute_async_script(SWITCH, i) for i in order]


def summary(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return f"median {statistics.median(values):7.1f} ms  p95 {p95:7.1f} ms  max {values[-1]:7.1f} ms"


def screenshots(driver, server, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    driver.get(server.url)
    wait_for(driver, "return window.septReview && window.septReview.state.timing.firstFrame")
    state = "window.septReview.state"
    driver.execute_script(f"window.septReview.selectClass({state}.version.classes.indexOf('dog'))")
    driver.execute_script(f"{state}.showRejected = true; document.getElementById('show-rejected').checked = true;")
    # a draft with a few edits, as a reviewer sees it before committing
    driver.execute_script(f"""
        const rows = {state}.byClass.get('dog');
        rows[3].status = 'rejected'; rows[3].reason = 'too generic';
        rows[5].text = rows[5].text.replace(/ dog /, ' puppy ');
        rows[22].status = 'accepted';
        {state}.selected.add(rows[1].uid); {state}.selected.add(rows[2].uid);
        window.septReview.render();""")
    paths = [out / "review-page.png"]
    driver.save_screenshot(str(paths[-1]))
    driver.find_element("id", "tab-plots").click()
    wait_for(driver, "const i = document.querySelectorAll('#plots-body img'); return i.length > 0 && "
                     "[...i].every(x => x.complete && x.naturalWidth > 0)", timeout=60)
    paths.append(out / "review-plots.png")
    driver.save_screenshot(str(paths[-1]))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--accepted", type=int, default=20)
    ap.add_argument("--rejected", type=int, default=10)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sept-bench-review-") as tmp:
        tmp = Path(tmp)
        ref = build_version(tmp / "store", args.classes, args.accepted, args.rejected)
        records = args.classes * (args.accepted + args.rejected)
        server = ReviewServer(ReviewApp(Store(tmp / "store"), ref)).start()
        driver = browser(tmp / "profile")
        try:
            driver.get(server.url)  # warm-up: the browser's own start, caches, JIT
            wait_for(driver, "return window.septReview && window.septReview.state.timing.firstFrame")
            loads = [first_render(driver, server.url) for _ in range(args.loads)]
            hidden = class_switches(driver, args.classes)
            driver.execute_script("window.septReview.state.showRejected = true; window.septReview.render();")
            shown = class_switches(driver, args.classes)
            shots = screenshots(driver, server, args.screenshots) if args.screenshots else []
        finally:
            driver.quit()
            server.stop()
    version = driver.capabilities.get("browserVersion", "?")
    frames = [f for _, f in loads]
    print(f"review page: {args.classes} classes x {args.accepted + args.rejected} candidates = {records} records, "
          f"chromium {version} headless")
    print(f"first render, DOM built      {summary([b for b, _ in loads])}   ({len(loads)} page loads)")
    print(f"first render, frame painted  {summary(frames)}   goal < 1000 ms: "
          f"{statistics.median(frames) / 1000:.3f} of the goal")
    for label, values in ((f"{args.accepted} rows", hidden), (f"{args.accepted + args.rejected} rows", shown)):
        print(f"class switch, {label:<14} {summary(values)}   goal < 100 ms: "
              f"{statistics.median(values) / 100:.3f} of the goal (p95 {sorted(values)[int(0.95 * (len(values) - 1))] / 100:.3f})")
    for p in shots:
        print(f"screenshot: {p}")


if __name__ == "__main__":
    main()
