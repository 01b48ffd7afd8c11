"""The web page in a real browser: Debian's chromium, headless, driven by Playwright."""

import os
import re
import shutil
import time

import pytest
from conftest import TOKEN, evidence, running_server
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium")
# Flags for a machine with no network but loopback: no background fetches, no GPU, as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TWEET = "so happy today, best day ever :)"
LINES = ["I love this song", "worst day ever, I hate it", "<img src=x onerror=window.pwned=1>"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        message = "Debian's chromium is absent: apt-get install chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("page"), API_TOKEN=TOKEN) as started:
        yield started


@pytest.fixture
def page(browser, server):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.problems = []  # console errors (a CSP violation among them) and uncaught exceptions
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.goto(f"https://127.0.0.1:{server['port']}/")
    yield page
    context.close()


def connect(page):
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    expect(page.locator("#status")).to_have_text(re.compile("^connected"))


def test_typing_a_tweet_shows_its_label_score_and_coloured_terms(page, default_model, tmp_path):
    assert page.title() == "Tweet sentiment"
    connect(page)
    assert default_model.version in page.text_content("#card")
    assert "2020 approach" in page.text_content("#card")
    page.click("#tweet")
    page.keyboard.type(TWEET, delay=5)  # as a person types: a request per pause
    expect(page.locator("#score")).to_have_text(f"score {default_model.scores([TWEET])[0]:.3f}")
    assert page.text_content("#label") == default_model.run([TWEET])[0] == "Positive"
    terms = page.locator("#terms span")
    pulls = default_model.explain(TWEET)  # those the answer rounds to 0 are left out
    positive = [p for p in pulls["Positive"] if round(p[1], 6)]
    assert terms.count() == len(positive) + len([p for p in pulls["Negative"] if round(p[1], 6)])
    assert terms.first.text_content() == positive[0][0]
    assert "Positive" in terms.first.get_attribute("class")
    assert terms.first.evaluate("e => getComputedStyle(e).backgroundColor").startswith(
        "rgba(26, 127, 55"
    )
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    if os.environ.get("PAGE_SCREENSHOT"):  # README's picture: PAGE_SCREENSHOT=docs/page.png
        page.fill("#lines", "\n".join(LINES))
        page.click("#label-lines")
        expect(page.locator("#table tbody tr")).to_have_count(3)
        page.screenshot(path=os.environ["PAGE_SCREENSHOT"], full_page=True)
    assert page.problems == []


def test_pasted_lines_become_a_sortable_table_and_markup_stays_text(page, default_model):
    connect(page)
    page.fill("#lines", "\n".join(LINES))
    page.click("#label-lines")
    rows = page.locator("#table tbody tr")
    expect(rows).to_have_count(3)
    cells = [rows.nth(i).locator("td").all_text_contents() for i in range(3)]
    assert [c[1] for c in cells] == LINES  # the markup shows as text
    assert [c[2] for c in cells] == default_model.run(LINES)
    assert page.locator("#table img").count() == 0
    assert page.evaluate("window.pwned") is None
    page.click("th[data-key=score]")
    scores = [float(rows.nth(i).locator("td").nth(3).text_content()) for i in range(3)]
    assert scores == sorted(scores)
    with page.expect_download() as download:
        page.click("#download")
    lines = download.value.path().read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id,tweet,label,score" and len(lines) == 4
    assert any(line.startswith("3,<img src=x onerror=window.pwned=1>,") for line in lines)
    assert page.problems == []


def test_a_wrong_token_says_so_and_nothing_connects(page):
    page.fill("#token", "wrong-token")
    page.click("#token-form button")
    expect(page.locator("#error")).to_contain_text("send a valid token")
    assert not page.text_content("#status").startswith("connected")


def test_the_model_picked_answers_and_its_card_is_shown(page):
    """Every model the server lists is in the picker; the one picked labels the typed tweet."""
    import registry

    models = registry.load()
    connect(page)
    names = page.eval_on_selector_all("#model option", "options => options.map(o => o.value)")
    assert names == [m["name"] for m in models.listing()]
    assert page.input_value("#model") == models.default
    page.click("#tweet")
    page.keyboard.type(TWEET, delay=5)
    # The typing's own answer (120 ms after the last key) comes first, so it cannot redraw the
    # side-by-side table later, under the checks below.
    expect(page.locator("#status")).to_contain_text(f"answered by {models.default} ")
    for name in reversed(names):
        served = models.get(name)
        page.select_option("#model", name)
        expect(page.locator("#card")).to_contain_text(served.version)
        expected = f"score {served.model.scores([TWEET])[0]:.3f}"
        expect(page.locator("#score")).to_have_text(expected)
        expect(page.locator("#status")).to_contain_text(f"answered by {name} {served.version}")
    rows = page.locator("#compare tbody tr")
    expect(rows).to_have_count(len(names))
    for n, name in enumerate(names):  # every model side by side, whichever is picked
        served = models.get(name)
        row = rows.nth(n)
        expect(row.locator("td").nth(0)).to_have_text(served.entry.display_name)
        expect(row.locator("td").nth(1)).to_have_text(served.model.run([TWEET])[0])
        expect(row.locator("td").nth(2)).to_have_text(f"{served.model.scores([TWEET])[0]:.3f}")
    assert page.problems == []


def test_the_page_shows_the_candidate_and_its_agreement(page, server):
    """Set a candidate with the admin token, shadow some requests, and the page says so."""
    import json
    import ssl
    import urllib.request

    import registry

    context = ssl.create_default_context(cafile=str(server["folder"] / "server.crt"))
    admin = (server["folder"] / ".admin_token").read_text().strip()
    base = f"https://127.0.0.1:{server['port']}/api/v1"

    def call(method, path, body, token):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        request = urllib.request.Request(base + path, data, headers, method=method)
        with urllib.request.urlopen(request, context=context) as response:
            return json.loads(response.read())

    call("PUT", "/aliases/candidate", {"model": "tweet-sentiment"}, admin)
    try:
        words = ("love", "hate", "great")  # six tweets the models tell apart
        texts = [f"{TWEET} {w}" for w in words] + [f"{LINES[1]} {w}" for w in words]
        for i in range(3):
            call("POST", f"/{TOKEN}/predict", {"1": texts[i], "2": texts[3 + i]}, TOKEN)
        expected = evidence(registry.load().get().name, "tweet-sentiment", texts)["pairs"]
        deadline = time.monotonic() + 10  # each worker writes its counts out within 2 s
        while (state := call("GET", "/aliases", None, TOKEN))["shadow"]["pairs"] < expected:
            assert time.monotonic() < deadline, state
            time.sleep(0.25)
        connect(page)
        served = registry.load().get("tweet-sentiment")
        shadow, labelled = state["shadow"], state["labelled"]
        expect(page.locator("#aliases")).to_contain_text(
            f"candidate tweet-sentiment {served.version}: agrees on "
            f"{shadow['agreement'] * 100:.1f}% of {shadow['pairs']} tweets shadowed"
        )
        assert shadow["pairs"] == expected == 6
        if "candidate" in labelled:  # the reference set is at hand
            expect(page.locator("#aliases")).to_contain_text(
                f"on {labelled['tweets']:,} tweets people labelled, balanced accuracy "
                f"{labelled['candidate']['balanced_accuracy'] * 100:.1f}%"
            )
        expect(page.locator("#aliases")).to_contain_text("not promotable: ")
    finally:
        call("DELETE", "/aliases/candidate", None, admin)
    assert page.problems == []
