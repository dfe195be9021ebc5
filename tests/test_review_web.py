"""`sept review`: the page in a real browser (Debian's chromium + chromedriver via Selenium), the server's safety checks.

The web commit must give the very version `sept store checkout` + hand edits + `sept store
commit` gives for the same edits: both are content-addressed, so equal ids mean equal records.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sept.neighbor_store import NeighborRecord, Store
from sept.neighbor_store.review import checkout, commit
from sept.neighbor_store.review_web import ReviewApp, ReviewServer

CHROMIUM = os.environ.get("SEPT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SEPT_CHROMEDRIVER", "/usr/bin/chromedriver")
XSS = "<img src=x onerror=alert(1)>"
XSS_CLASS = "<b>bold</b> & co"
CLASSES = ["dog", "cafe/restaurant", XSS_CLASS]


def rec(cls, text, kind="acoustic", status="accepted", reason=None, **scores):
    return NeighborRecord(class_=cls, text=text, kind=kind, status=status, reason=reason,
                          scores=scores, source={"backend": "vllm", "model": "tiny", "prompt": "default@abc", "sample": 0})


def write_fixture_version(root: Path) -> str:
    store = Store(root)
    neighbors = [
        rec("dog", "barking dog", clap_self=0.61, clap_best_other=0.32, dedup_max=0.71),
        rec("dog", "puppy yelp", "subtype", clap_self=0.55, clap_best_other=0.12, dedup_max=0.40),
        rec("dog", "canine howl", "synonym", clap_self=0.72, clap_best_other=0.21, dedup_max=0.52),
        rec("cafe/restaurant", "clinking cups", clap_self=0.48, clap_best_other=0.30, dedup_max=0.33),
        rec("cafe/restaurant", XSS, "other", clap_self=0.20, clap_best_other=0.18, dedup_max=0.10),
        rec(XSS_CLASS, "ampersand hum", clap_self=0.30, clap_best_other=0.10, dedup_max=0.20),
    ]
    rejected = [
        rec("dog", "woof woof", "acoustic", "rejected", "clap_low_self", clap_self=0.05, clap_best_other=0.04, dedup_max=0.3),
        rec("dog", "cat meow", "acoustic", "rejected", "clap_confuser:cafe/restaurant", clap_self=0.2,
            clap_best_other=0.5, dedup_max=0.2),
        rec("cafe/restaurant", "coffee machine", "acoustic", "rejected", "clap_low_self", clap_self=0.09,
            clap_best_other=0.02, dedup_max=0.2),
    ]
    ref = store.write_version("ReviewSet", CLASSES, neighbors, rejected,
                              params={"backend": "vllm", "model": "tiny"}, message="generated")
    v = store.read(ref)
    store.attach_margins(ref, "enc-test", np.full((len(v.classes), len(v.neighbors)), 0.5, np.float32), v.neighbor_ids)
    return ref


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "store"
    ref = write_fixture_version(root)
    store = Store(root)
    server = ReviewServer(ReviewApp(store, ref)).start()
    yield store, ref, server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(), (
        f"need {CHROMIUM} and {CHROMEDRIVER}: `apt-get install -y chromium chromium-driver` "
        "(make test installs them when run as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    # a draft left by one test must not hold the next page load on its "leave page?" prompt
    opts.set_capability("unhandledPromptBehavior", "accept")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# ---- page helpers ----------------------------------------------------------------------------

def wait(driver, predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out = predicate()
        except Exception:  # element not there yet, or re-rendered under us
            out = None
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; status: {status_text(driver)!r}")


def status_text(driver):
    try:
        return driver.find_element("id", "status").text
    except Exception:
        return "<no page>"


def open_page(driver, server):
    driver.get(server.url)
    wait(driver, lambda: driver.execute_script("return document.body.dataset.ready === '1'"), what="first render")


def pick_class(driver, name):
    for li in driver.find_elements("css selector", "#class-list li"):
        if li.find_element("css selector", ".cname").text == name:
            li.click()
            wait(driver, lambda: driver.find_element("id", "class-name").text == name, what=f"class {name}")
            return
    raise AssertionError(f"class {name!r} not in the list")


def row(driver, text):
    for tr in driver.find_elements("css selector", "#rows-body tr"):
        if tr.find_element("css selector", "td.text").text.split("\n")[0] == text:
            return tr
    raise AssertionError(f"no row {text!r}; rows: {row_texts(driver)}")


def row_texts(driver):
    return [tr.find_element("css selector", ".neighbor-text").text
            for tr in driver.find_elements("css selector", "#rows-body tr")]


def key(driver, k):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(k).perform()


def do_commit(driver, message):
    box = driver.find_element("id", "commit-message")
    box.clear()
    box.send_keys(message)
    driver.find_element("id", "commit").click()
    return wait(driver, lambda: (t := status_text(driver)) and not t.startswith("committing") and t, what="commit answer")


def edit_text(driver, text, new):
    from selenium.webdriver.common.keys import Keys

    row(driver, text).find_element("css selector", "button.do-edit").click()
    inp = wait(driver, lambda: driver.find_element("css selector", "input.edit-text"), what="edit box")
    inp.send_keys(Keys.CONTROL, "a")
    inp.send_keys(Keys.DELETE)
    if new:
        inp.send_keys(new)
    inp.send_keys(Keys.ENTER)


def versions(store):
    return sorted(r["id"] for r in store.list("ReviewSet"))


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ---- the page --------------------------------------------------------------------------------

def test_reject_edit_add_commit_writes_the_same_child_as_store_commit(served, browser, tmp_path):
    store, ref, server = served
    parent = store.read(ref)
    open_page(browser, server)
    assert "token=" not in browser.current_url  # kept out of the address bar and history
    names = [li.find_element("css selector", ".cname").text for li in browser.find_elements("css selector", "#class-list li")]
    counts = [li.find_element("css selector", ".counts").text for li in browser.find_elements("css selector", "#class-list li")]
    assert names == CLASSES and counts == ["3 / 2", "2 / 1", "1 / 0"]

    pick_class(browser, "dog")
    # reject by keyboard: cursor starts on the first row, "barking dog"; reason from the toolbar box
    browser.find_element("id", "reason").send_keys("too generic")
    browser.find_element("id", "class-name").click()
    key(browser, "r")
    assert "rejected" in row(browser, "barking dog").get_attribute("class")
    edit_text(browser, "puppy yelp", "puppy yelping")
    browser.find_element("id", "new-text").send_keys("dog growl")
    browser.find_element("id", "add").click()
    assert row_texts(browser) == ["barking dog", "puppy yelping", "canine howl", "dog growl"]
    assert browser.find_element("id", "draft-count").text == "3 change(s) in draft"
    answer = do_commit(browser, "review: dog")
    assert answer.startswith("committed reviewset@"), answer

    new = [i for i in versions(store) if i != parent.id]
    assert len(new) == 1
    child = store.read(f"reviewset@{new[0]}")
    assert child.parent == parent.id and child.manifest["message"] == "review: dog"
    assert [name for name, problems in store.verify(child.ref) if problems] == []
    # the neighbor set changed: margins are not carried over
    assert child.manifest["margins"]["status"] == "stale" and store.margin_fingerprints(child.ref) == []

    # the same edits by hand in a checkout give the same version (content-addressed)
    co = tmp_path / "co"
    checkout(store, ref, co)
    lines = jsonl(co / "neighbors.jsonl")
    for line in lines:
        if line["text"] == "barking dog":
            line.update(status="rejected", reason="too generic")
        if line["text"] == "puppy yelp":
            line["text"] = "puppy yelping"
    lines.append({"class": "dog", "text": "dog growl", "kind": "human"})
    (co / "neighbors.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    by_hand, created = commit(store, co, "same edits by hand")
    assert by_hand == child.ref and created is False

    dog = {r.text: r for r in child.by_class()["dog"]}
    assert set(dog) == {"puppy yelping", "canine howl", "dog growl"}
    assert dog["puppy yelping"].source["edited_from"] == parent.by_class()["dog"][1].id
    assert dog["dog growl"].kind == "human" and dog["dog growl"].source == {"backend": "human"}
    barking = [r for r in child.rejected if r.text == "barking dog"]
    assert len(barking) == 1 and barking[0].reason == "too generic"
    # the page now reviews the child, with an empty draft
    assert browser.find_element("id", "version-ref").text == child.ref
    assert browser.find_element("id", "draft-count").text == "no changes"

    # diff view: the same as `sept store diff`
    from sept.neighbor_store.diff import diff_versions

    expect = diff_versions(parent, child).summary()
    browser.find_element("id", "tab-diff").click()
    wait(browser, lambda: len(browser.find_elements("css selector", "#diff-a option")) == 2, what="version list")
    browser.find_element("id", "diff-show").click()
    summary = wait(browser, lambda: browser.find_element("id", "diff-summary").text, what="diff")
    assert (f"{expect['added']} added, {expect['removed']} removed, {expect['status_changed']} status changed, "
            f"{expect['text_changed']} text changed") in summary
    items = [li.text for li in browser.find_elements("css selector", "#diff-body li")]
    assert "+ dog growl (accepted)" in items and "~ text puppy yelp -> puppy yelping" in items
    assert "~ barking dog: accepted -> rejected" in items


def test_empty_text_shows_its_error_at_the_line_and_writes_nothing(served, browser):
    store, ref, server = served
    before = versions(store)
    open_page(browser, server)
    pick_class(browser, "cafe/restaurant")
    edit_text(browser, "clinking cups", "")
    answer = do_commit(browser, "bad")
    assert answer.startswith("nothing written") and "empty text" in answer
    bad = browser.find_element("css selector", "#rows-body tr.has-error")
    assert "empty text (class 'cafe/restaurant')" in bad.find_element("css selector", ".error").text
    assert versions(store) == before
    assert not list((store.root / "reviewset").glob(".tmp/*"))


def test_neighbor_text_and_class_name_render_as_text(served, browser):
    store, ref, server = served
    open_page(browser, server)
    assert XSS_CLASS in [e.text for e in browser.find_elements("css selector", "#class-list .cname")]
    assert browser.find_elements("css selector", "#class-list b") == []
    pick_class(browser, "cafe/restaurant")
    assert XSS in row_texts(browser)
    assert browser.find_elements("css selector", "img") == []
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [u for u in fetched if u.rstrip("/").endswith("/x")]
    from selenium.common.exceptions import NoAlertPresentException

    time.sleep(0.3)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    pick_class(browser, XSS_CLASS)
    assert browser.find_element("id", "class-name").text == XSS_CLASS


def test_sort_filter_show_rejected_bulk_accept_and_plots(served, browser):
    store, ref, server = served
    open_page(browser, server)
    pick_class(browser, "dog")
    header = [th for th in browser.find_elements("css selector", "#rows-head th") if th.text.startswith("clap_self")][0]
    header.click()
    assert row_texts(browser) == ["canine howl", "barking dog", "puppy yelp"]  # 0.72 > 0.61 > 0.55
    browser.find_element("id", "show-rejected").click()
    assert row_texts(browser)[-2:] == ["cat meow", "woof woof"]  # clap_self 0.2 > 0.05, below the accepted
    reasons = {tr.find_element("css selector", ".neighbor-text").text: tr.find_element("css selector", "td.reason").text
               for tr in browser.find_elements("css selector", "#rows-body tr")}
    assert reasons["woof woof"] == "clap_low_self" and reasons["cat meow"] == "clap_confuser:cafe/restaurant"
    for text in ("woof woof", "cat meow"):
        row(browser, text).find_element("css selector", "input.select").click()
    browser.find_element("id", "bulk-accept").click()
    assert "accepted" in row(browser, "woof woof").get_attribute("class")

    box = browser.find_element("id", "filter")
    box.send_keys("cups")
    wait(browser, lambda: [e.text for e in browser.find_elements("css selector", "#class-list .cname")] == ["cafe/restaurant"],
         what="filtered class list")
    assert row_texts(browser) == ["clinking cups"]
    box.clear()
    box.send_keys(" ")  # clear() fires no input event
    wait(browser, lambda: len(browser.find_elements("css selector", "#class-list li")) == 3, what="unfiltered list")

    answer = do_commit(browser, "accept two")
    assert answer.startswith("committed"), answer
    child = store.read(answer.split()[1].rstrip(";"))
    accepted = {r.text for r in child.by_class()["dog"]}
    assert {"woof woof", "cat meow"} <= accepted and not any(r.text == "woof woof" for r in child.rejected)

    browser.find_element("id", "tab-plots").click()
    imgs = wait(browser, lambda: browser.find_elements("css selector", "#plots-body img") if len(
        browser.find_elements("css selector", "#plots-body img")) == 5 else None, what="plots")
    wait(browser, lambda: all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", i)
                              for i in imgs), timeout=30, what="plot images")
    assert {i.get_attribute("alt") for i in imgs} == {
        "scores-clap_best_other", "scores-clap_self", "scores-dedup_max", "counts-per-class", "rejection-reasons"}


def test_keyboard_moves_between_items_and_classes(served, browser):
    store, ref, server = served
    open_page(browser, server)
    state = "return window.septReview.state"
    cursor_text = "const S = window.septReview.state; return S.rows.find(r => r.uid === S.cursor).text"
    assert browser.find_element("id", "class-name").text == "dog"
    browser.find_element("id", "class-name").click()
    key(browser, "j")
    key(browser, "j")
    assert browser.execute_script(cursor_text) == "canine howl"
    key(browser, "k")
    assert browser.execute_script(cursor_text) == "puppy yelp"
    key(browser, "r")
    key(browser, "n")
    assert browser.find_element("id", "class-name").text == "cafe/restaurant"
    key(browser, "j")
    key(browser, "x")
    key(browser, "d")
    assert row_texts(browser) == ["clinking cups"]
    key(browser, "p")
    assert "rejected" in row(browser, "puppy yelp").get_attribute("class")
    assert browser.execute_script(state + ".rows.filter(r => r.removed).length") == 1


def test_two_pages_on_one_version_both_commit_as_its_children(served, browser):
    store, ref, server = served
    parent = store.read(ref)
    first = browser.current_window_handle
    open_page(browser, server)
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    open_page(browser, server)
    try:
        browser.switch_to.window(first)
        pick_class(browser, "dog")
        browser.find_element("id", "new-text").send_keys("first tab neighbor")
        browser.find_element("id", "add").click()
        a = do_commit(browser, "tab one")
        browser.switch_to.window(second)
        pick_class(browser, "cafe/restaurant")
        browser.find_element("id", "new-text").send_keys("second tab neighbor")
        browser.find_element("id", "add").click()
        b = do_commit(browser, "tab two")
    finally:
        browser.close()
        browser.switch_to.window(first)
    assert a.startswith("committed") and b.startswith("committed"), (a, b)
    assert "had become the latest version" in b and parent.ref in b
    children = [store.read(f"reviewset@{i}") for i in versions(store) if i != parent.id]
    assert len(children) == 2 and {c.parent for c in children} == {parent.id}
    texts = [{r.text for r in c.neighbors} for c in children]
    assert sorted(("first tab neighbor" in t, "second tab neighbor" in t) for t in texts) == [(False, True), (True, False)]


# ---- the server without a browser ------------------------------------------------------------

def request(server, method, path, body=None, headers=None, token=True):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    h = {"Host": f"127.0.0.1:{server.port}"}
    if token:
        h["X-Sept-Token"] = server.app.token
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def draft_of(store, ref, add=None):
    v = store.read(ref)
    neighbors = [r.to_json_dict() for r in v.neighbors] + ([add] if add else [])
    return {"parent": v.id, "message": "m", "neighbors": neighbors, "rejected": [r.to_json_dict() for r in v.rejected]}


def test_changes_need_the_token_and_our_own_host_and_origin(served):
    store, ref, server = served
    before = versions(store)
    body = draft_of(store, ref, {"class": "dog", "text": "sneaky"})
    assert request(server, "POST", "/api/commit", body, token=False)[0] == 403
    assert request(server, "POST", "/api/commit", body, headers={"X-Sept-Token": "x" * 43})[0] == 403
    assert request(server, "POST", "/api/commit", body, headers={"Origin": "http://evil.example"})[0] == 403
    assert request(server, "POST", "/api/commit", body, headers={"Origin": "null"})[0] == 403
    # DNS rebinding: a foreign name resolving to 127.0.0.1 still sends its own Host
    assert request(server, "POST", "/api/commit", body, headers={"Host": f"evil.example:{server.port}"})[0] == 421
    assert request(server, "GET", "/api/version", headers={"Host": f"evil.example:{server.port}"})[0] == 421
    assert request(server, "GET", "/api/version", token=False)[0] == 403
    assert versions(store) == before
    status, out = request(server, "POST", "/api/commit", body, headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 200 and json.loads(out)["ref"].startswith("reviewset@")
    assert len(versions(store)) == len(before) + 1


def test_requests_cannot_name_a_path_outside_the_store(served, tmp_path):
    store, ref, server = served
    secret = tmp_path / "outside.txt"
    secret.write_text("outside the store")
    for path in ("/../outside.txt", "/static/../../outside.txt", f"/{secret}", "/review.js/../../../etc/passwd",
                 "/api/version?v=../../outside.txt", f"/api/version?v={secret}",
                 "/api/diff?a=../x&b=../y", "/api/plot?name=../../outside&token=" + server.app.token,
                 "/api/version?v=" + "0" * 64):
        status, out = request(server, "GET", path)
        assert status == 404 and b"outside the store" not in out, path
    body = draft_of(store, ref)
    for parent in ("../../x", str(store.root), "0" * 64, ""):
        assert request(server, "POST", "/api/commit", {**body, "parent": parent})[0] == 404


def test_commit_reports_the_line_at_fault_and_keeps_nothing(served):
    store, ref, server = served
    before = versions(store)
    body = draft_of(store, ref)
    body["neighbors"][2] = {**body["neighbors"][2], "class": "no such class"}
    status, out = request(server, "POST", "/api/commit", body)
    err = json.loads(out)["errors"][0]
    assert status == 422 and err["file"] == "neighbors" and err["line"] == 3
    assert "unknown class 'no such class'" in err["message"] and "sept-review-" not in err["message"]
    body = draft_of(store, ref, {"class": "dog", "text": "Barking  DOG"})  # same id as an accepted line
    status, out = request(server, "POST", "/api/commit", body)
    assert status == 422 and "duplicate id" in json.loads(out)["errors"][0]["message"]
    assert versions(store) == before


def test_cli_prints_a_loopback_url_with_a_token(tmp_path):
    root = tmp_path / "store"
    ref = write_fixture_version(root)
    sept = shutil.which("sept", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen([sept, "review", ref, "--store", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        url = proc.stdout.readline().strip()
        assert first.startswith(f"reviewing {ref}")
        m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{40,})", url)
        assert m, url
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=10)
        conn.request("GET", "/api/version", headers={"X-Sept-Token": m.group(2)})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["ref"] == ref
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
