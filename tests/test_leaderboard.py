"""The HTML leaderboard in headless Chromium: self-contained from file://, no console errors,
plots drawn, hostile generations shown as text, lazy example browser, sorting and exports."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from harness.config import stable_hash
from harness.scoring import BootstrapConfig
from harness.stages.score import JudgedBy, summarise

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<!-- <script>alert(1)</script><img src=x onerror=alert(2)>"
METHODS = ["srpo", "dpo", "ipo", "simpo", "rpo"]


def _fake_run(folder: Path, n_examples: int, revisions: int, methods=METHODS, task: str = "xsum", note: str = "offline proxy judge",
              config: dict | None = None, steps: int = 0) -> Path:
    """A run folder as the pipeline writes it (examples, generations, verdicts), scored by the real
    scoring; with ``steps``, each method's training log of that many steps (SRPO's with its revision terms)."""
    folder.mkdir(parents=True)
    for m in methods if steps else []:
        log = [{"step": s, "loss": 0.7 / s, "lr": 1e-6, "margin": 0.01 * s, "accuracy": min(1.0, s / 10),
                **({"revision_margin": 0.02 * s, "revision_accuracy": 0.5} if m == "srpo" else {})} for s in range(1, steps + 1)]  # fmt: skip
        (folder / "train" / m).mkdir(parents=True)
        (folder / "train" / m / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))
    ids = [f"ex{i}" for i in range(n_examples)]
    examples = [{"id": eid, "source": f"Article {i} text. " * 20, "reference": f"Gold summary {i}."} for i, eid in enumerate(ids)]
    generations, judgments = [], []
    for k, m in enumerate(methods):
        for r in range(revisions):
            for i, eid in enumerate(ids):
                text = HOSTILE if (i, m, r) == (0, "srpo", 1) else f"{m} revision {r} summary of article {i}."
                generations.append({"example_id": eid, "method": m, "revision": r, "text": text})
                judgments.append({"example_id": eid, "revision": r, "method": m, "opponent": "reference", "preference": float((i + k + r) % 3 != 0),
                                  "error": "", "orders": [{"preference": 1.0, "rationale": "A is tighter </script><b>bold</b>"}], "judge": "fp",
                                  "texts": stable_hash([text, f"Gold summary {i}."])})  # fmt: skip
                if m == "srpo" and "dpo" in methods:
                    dpo_text = f"dpo revision {r} summary of article {i}."
                    judgments.append({"example_id": eid, "revision": r, "method": "srpo", "opponent": "dpo", "preference": float(i % 4 != 0),
                                      "error": "", "orders": [], "judge": "fp", "texts": stable_hash([text, dpo_text])})  # fmt: skip
    for name, rows in (("examples.jsonl", examples), ("generations.jsonl", generations), ("judgments.jsonl", judgments)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    meta = {"judge": {"judge": "local-lm", "model": "smollm2-135m"}, "judge_is_proxy": True, "judge_note": note,
            "model": "smollm2-135m", "training_data": "built pairs", "example_ids": ids, "inputs": {"judge": {"fingerprint": "fp"}},
            "revisions": revisions - 1, **({"config": config} if config else {})}  # fmt: skip
    judge = {"judge": "local-lm", "model": "smollm2-135m"}
    summary = summarise(task, meta, [JudgedBy("fp", judge, judgments, True)], generations, examples, BootstrapConfig(resamples=1000))
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "manifest.json").write_text(json.dumps({"inputs": {"judge": {"fingerprint": "fp", "config": judge}, "judges": {"fp": {"config": judge}}}}))
    return folder



def test_a_page_of_two_tasks_says_each_rows_task_and_each_tasks_proxy_note(tmp_path):
    """Runs of two tasks on one page: every row names its task, and each task's proxy note (which
    names the paper's judge for that task) and each run's paper-protocol footnote are shown, not
    the first run's for all."""
    from html import unescape

    from harness.leaderboards.render import load_runs, write_pages

    xsum = _fake_run(tmp_path / "xsum", n_examples=2, revisions=2, methods=["srpo", "dpo"], note="proxy; the paper's judge: alpaca-eval")
    chat = _fake_run(tmp_path / "chat", n_examples=2, revisions=2, methods=["srpo", "dpo"], task="arena-hard", note="proxy; the paper's judge: gpt-4o")
    html = unescape(write_pages(tmp_path / "page.html", load_runs([str(xsum), str(chat)])).read_text())
    assert "xsum: proxy; the paper's judge: alpaca-eval arena-hard: proxy; the paper's judge: gpt-4o" in html
    assert "* xsum: this run has 2 examples, fewer than the 1024 " in html and "; chat: this run has 2 examples" in html  # each run's footnote, by its folder
    rows = (tmp_path / "page.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {"xsum", "arena-hard"}
    assert all(row.split(",")[0] == ("xsum" if row.endswith(",xsum") else "arena-hard") for row in rows)  # the run column is the folder's name


def test_each_section_names_its_own_interval(tmp_path):
    """The win rates' band is Wilson's score interval and the paired differences' Bonett and
    Price's: each section names its own, and a summary from before they were told apart names both."""
    from html import unescape

    from harness.leaderboards.render import load_runs, write_pages

    run = _fake_run(tmp_path / "run", n_examples=4, revisions=2)
    html = unescape(write_pages(tmp_path / "page.html", load_runs([str(run)])).read_text())
    assert "the band is its 95% interval (Wilson score intervals with the verdicts' dispersion)." in html
    assert "with its 95% interval (Bonett and Price's adjusted Wald interval): an interval that excludes 0" in html
    summary = json.loads((run / "summary.json").read_text())
    for kind in ("win_rate", "paired"):
        del summary["meta"]["scoring"][f"{kind}_interval"]
    (run / "summary.json").write_text(json.dumps(summary))
    html = unescape(write_pages(tmp_path / "old.html", load_runs([str(run)])).read_text())
    assert html.count("interval (Wilson score intervals with the verdicts' dispersion, Bonett-Price for paired differences, 95% level)") == 2


def test_the_forest_plot_marks_what_holds_for_the_whole_table_and_a_summary_without_p_values_still_draws(tmp_path):
    """A red diamond where the Holm p is below 1 - level, a circle elsewhere; the table
    shows both p-values; a summary written before the harness computed them draws with neither."""
    from harness.leaderboards.lm import paired_figure, paired_table_rows
    from harness.leaderboards.render import _named, load_runs

    run = _named(load_runs([str(_fake_run(tmp_path / "run", n_examples=8, revisions=2, methods=["srpo", "dpo"]))]))[0]
    paired = run["summary"]["paired"]
    assert len(paired) == 4  # srpo - dpo at revisions 0 and 1; revision 1 - 0 of each
    for p, holm in zip(paired, (0.001, 0.5, 0.049, 0.051)):
        p["p_holm"] = holm
    marker = paired_figure(run, "").data[0].marker
    assert list(marker.symbol) == ["diamond", "circle", "diamond", "circle"] and marker.color[0] != marker.color[1]
    assert [row[5:7] for row in paired_table_rows([run])] == [[format(p["p_value"], ".3g"), format(p["p_holm"], ".3g")] for p in paired]
    for p in paired:
        del p["p_value"], p["p_holm"]
    assert set(paired_figure(run, "").data[0].marker.symbol) == {"circle"}
    assert {tuple(row[5:7]) for row in paired_table_rows([run])} == {("-", "-")}


def test_the_training_section_draws_each_methods_log_in_its_colour_and_thins_a_long_one(tmp_path):
    """1,200 steps are drawn as 400 means of 3 (named by the last); SRPO's revision terms get
    lines of their own; each method keeps the colour of its win-rate line; a run without logs
    has no Training section."""
    from harness.leaderboards.lm import render, revision_figure
    from harness.leaderboards.render import _named, load_runs
    from harness.leaderboards.training import training_figure

    run = _named(load_runs([str(_fake_run(tmp_path / "run", n_examples=4, revisions=2, methods=["srpo", "dpo"], steps=1200))]))[0]
    colors = {trace.name: trace.line.color for trace in revision_figure([run], False).data if trace.name}
    fig = training_figure(run, {m: colors[m] for m in ("srpo", "dpo")})
    lines = {(trace.name, trace.xaxis): trace for trace in fig.data}
    assert sorted({name for name, _ in lines}) == ["dpo", "srpo", "srpo (revision)"]
    loss = lines[("srpo", "x")]
    assert len(loss.x) == 400 and list(loss.x[:2]) == [3, 6] and loss.y[0] == pytest.approx((0.7 + 0.35 + 0.7 / 3) / 3)
    assert {trace.line.color for trace in fig.data if trace.name.startswith("srpo")} == {colors["srpo"]} != {colors["dpo"]}
    assert lines[("srpo (revision)", "x2")].line.dash == "dot" and ("srpo (revision)", "x") not in lines  # margin panel; SRPO has no revision loss
    assert fig.layout.yaxis.type == "log"  # losses of any scale side by side
    assert "<h2>Training</h2>" in render([run])
    bare = _named(load_runs([str(_fake_run(tmp_path / "bare", n_examples=4, revisions=2, methods=["srpo", "dpo"]))]))[0]
    assert training_figure(bare, colors) is None and "<h2>Training</h2>" not in render([bare])


def test_a_run_folder_named_twice_is_shown_once(tmp_path):
    """`harness leaderboard runs/a runs/a/ runs/*` (the same folder under two spellings) lists its
    rows once, says so, and keeps the spelling given first as the run's name."""
    run = _fake_run(tmp_path / "run", n_examples=2, revisions=2, methods=["srpo", "dpo"])
    other = _fake_run(tmp_path / "other", n_examples=2, revisions=2, methods=["srpo"])
    result = run_cli("leaderboard", str(run), str(other), f"{run}/", f"{tmp_path}/./run", "--out", str(tmp_path / "page.html"))
    assert result.returncode == 0, result.stderr
    assert "note: 2 run folder(s) named more than once; each is shown once" in result.stdout
    rows = [row.split(",") for row in (tmp_path / "page.csv").read_text().splitlines()[1:]]
    assert sorted(row[-1] for row in rows) == ["other"] * 2 + ["run"] * 6  # 2 revisions of srpo, dpo and srpo vs dpo; 2 of srpo


def test_intervals_on_fewer_verdicts_than_their_coverage_is_shown_from_say_so(tmp_path):
    """Wilson's and Bonett-Price's hold their level from 16 verdicts on, the bootstrap from 60
    (benchmarks/coverage.py): rows on fewer are counted in a note on screen, in summary.json and on
    the page; 16 examples need none."""
    from html import unescape

    from harness.leaderboards.render import load_runs, write_pages

    from harness.runs import run_records

    few = _fake_run(tmp_path / "few", n_examples=4, revisions=2, methods=["srpo"])
    note = json.loads((few / "summary.json").read_text())["meta"]["scoring"]["few_note"]
    assert note.startswith("3 row(s) of these tables rest on fewer than 16 verdicts")  # 2 revisions and their paired difference
    assert f"Note: {note}." in unescape(write_pages(tmp_path / "page.html", load_runs([str(few)])).read_text())
    enough = _fake_run(tmp_path / "enough", n_examples=16, revisions=2, methods=["srpo"])
    assert "few_note" not in json.loads((enough / "summary.json").read_text())["meta"]["scoring"]
    summary, examples, generations, judges = run_records(enough)
    bca = summarise("xsum", summary["meta"], judges, generations, examples, BootstrapConfig(interval="bca", resamples=1000))
    assert bca["meta"]["scoring"]["few_note"].startswith("3 row(s) of these tables rest on fewer than 60 verdicts")
    result = run_cli("score", str(few))
    assert result.returncode == 0 and "rest on fewer than 16 verdicts" in result.stdout


def test_a_plot_of_runs_on_other_examples_says_its_gaps_are_not_the_methods_alone(tmp_path):
    """Two runs of one task on 4 and 8 examples: their lines differ in examples as well as
    methods, and the page says so (paired comparisons are made within a run)."""
    from html import unescape

    from harness.leaderboards.render import load_runs, write_pages

    a = _fake_run(tmp_path / "a", n_examples=4, revisions=2, methods=["srpo"])
    b = _fake_run(tmp_path / "b", n_examples=8, revisions=2, methods=["dpo"])
    html = unescape(write_pages(tmp_path / "page.html", load_runs([str(a), str(b)])).read_text())
    assert "These runs were judged on different examples: a gap between their lines is not the methods' alone." in html


def _config(beta: float, limit: int = 16, lr: float = 1e-6) -> dict:
    """What summary.json's meta holds of a run's config (harness/stages/score.py), options resolved."""
    return {"task": "xsum", "methods": ["srpo"], "limit": limit, "seed": 0, "method_args": {"beta": beta}, "sampling": {"max_new_tokens": 48},
            "resolved_method_args": {"srpo": {"beta": beta, "alpha": 0.0}, "dpo": {"beta": 0.1}},
            "resolved_train": {"srpo": {"lr": lr, "epochs": 1}, "dpo": {"lr": lr, "epochs": 1}},
            "resolved_task_args": {"variant": "xsum", "data_files": {"test": "/data/" + "long/" * 20 + "test.jsonl"}}}  # fmt: skip


def test_runs_of_a_sweep_are_named_by_the_settings_that_set_them_apart(tmp_path):
    """Runs named by their config's hash: the legend, the forest plot and the tables' settings
    column name each by what differs, run-wide (--limit) and in the method's own options (beta, its
    trainer's lr), and by its folder only where nothing does (one config in two folders)."""
    from harness.leaderboards.render import load_runs, write_pages

    runs = {"xsum-aaa": (["srpo", "dpo"], _config(0.01)), "xsum-bbb": (["srpo"], _config(0.1, lr=2e-6)),
            "xsum-ccc": (["srpo"], _config(0.01, limit=64)), "xsum-ddd": (["srpo"], _config(0.01, limit=64))}  # fmt: skip
    folders = [str(_fake_run(tmp_path / name, n_examples=2, revisions=1, methods=methods, config={**config, "output_dir": name}))
               for name, (methods, config) in runs.items()]  # the folder is no setting  # fmt: skip
    chat = _fake_run(tmp_path / "arena-hard-eee", n_examples=2, revisions=1, methods=["srpo"], task="arena-hard", config={**_config(1.3), "task": "arena-hard"})
    html = write_pages(tmp_path / "page.html", load_runs([*folders, str(chat)])).read_text()
    settings = {(row[-1], row[1]): row[-2] for row in csv.reader(io.StringIO((tmp_path / "page.csv").read_text())) if row[0] != "task"}
    assert settings.pop(("arena-hard-eee", "srpo")) == ""  # alone in its task: runs are told apart within a task
    assert settings == {("xsum-aaa", "srpo"): "limit=16, beta=0.01, train.lr=1e-06", ("xsum-aaa", "dpo"): "limit=16",
                        ("xsum-aaa", "srpo vs dpo"): "limit=16, beta=0.01, train.lr=1e-06", ("xsum-bbb", "srpo"): "limit=16, beta=0.1, train.lr=2e-06",
                        ("xsum-ccc", "srpo"): "limit=64, beta=0.01, train.lr=1e-06, xsum-ccc", ("xsum-ddd", "srpo"): "limit=64, beta=0.01, train.lr=1e-06, xsum-ddd"}  # fmt: skip
    assert "srpo (limit=16, beta=0.1, train.lr=2e-06)" in html and "dpo (limit=16)" in html  # the legend
    assert "srpo - dpo (rev 0) [limit=16, xsum-aaa]" in html  # the forest plot's run: its method options are not what it compares
    assert "judged on different" not in html  # the same examples, the same judge
    alone = write_pages(tmp_path / "one.html", load_runs(folders[:1]))
    assert {row[-2] for row in csv.reader(io.StringIO(alone.with_suffix(".csv").read_text()))} == {"settings", ""}  # a run alone has nothing to set apart


def test_a_glob_over_runs_leaves_out_one_not_finished_and_says_so(tmp_path):
    """`harness leaderboard runs/*` while a run is still going: the page of the finished runs, and a
    note naming the one left out; a folder named alone still ends in the error."""
    done = _fake_run(tmp_path / "done", n_examples=2, revisions=2, methods=["srpo"])
    going = tmp_path / "going"
    going.mkdir()
    (going / "config.json").write_text("{}")
    result = run_cli("leaderboard", str(done), str(going), "--out", str(tmp_path / "page.html"))
    assert result.returncode == 0, result.stderr
    assert f"note: {going} holds no summary.json (a run not finished, or no run): left out" in result.stdout
    assert {row.split(",")[-1] for row in (tmp_path / "page.csv").read_text().splitlines()[1:]} == {"done"}
    alone = run_cli("leaderboard", str(going), "--out", str(tmp_path / "none.html"))
    assert alone.returncode == 2 and alone.stderr.endswith(f"does not exist: is {str(going)!r} a finished run folder?\n")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield browser
        browser.close()


def _open(browser, html: Path, width: int = 1280):
    page = browser.new_page(viewport={"width": width, "height": 720})  # 1280 x 720: playwright's default
    problems, dialogs, requests = [], [], []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url) if not request.url.startswith(("file:", "data:", "blob:")) else None)
    page.goto(html.as_uri())
    page.wait_for_selector(".js-plotly-plot .main-svg")
    return page, problems, dialogs, requests


def test_page_works_offline_and_shows_hostile_text_as_text(browser, tmp_path):
    run = _fake_run(tmp_path / "run", n_examples=3, revisions=3, steps=4)
    out = tmp_path / "board.html"
    result = run_cli("leaderboard", str(run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    page, problems, dialogs, requests = _open(browser, out)
    assert problems == [] and requests == []  # no console errors, no network
    assert page.locator(".js-plotly-plot").count() >= 3  # win rate vs revision, head-to-head, training
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= len(METHODS)
    page.fill("#browser-index", "1")
    page.dispatch_event("#browser-index", "change")
    text = page.inner_text("#browser")
    assert HOSTILE in text and "A is tighter </script><b>bold</b>" in text  # shown as text
    assert page.locator("#browser script, #browser img, #browser b").count() == 0  # never parsed as HTML
    page.wait_for_timeout(200)
    assert dialogs == []
    assert "offline proxy judge" in page.inner_text("#judge-note")
    # paired differences with their intervals, as summary.json holds them
    summary = json.loads((run / "summary.json").read_text())
    first = summary["paired"][0]
    cells = page.locator("table#paired tbody tr").first.locator("td").all_inner_texts()
    assert cells[0] == "xsum" and cells[3] == f"{first['difference']:+.3f}" and cells[4] == f"[{first['ci'][0]:.3f}, {first['ci'][1]:.3f}]"
    assert page.locator("table#paired tbody tr").count() == len(summary["paired"]) > 0


def test_table_sorts_and_exports(browser, tmp_path):
    run = _fake_run(tmp_path / "run", n_examples=2, revisions=2)
    out = tmp_path / "board.html"
    assert run_cli("leaderboard", str(run), "--out", str(out)).returncode == 0
    results = out.with_suffix(".csv").read_text().splitlines()
    assert results[0].startswith("task,method,model,training data,judge,revision,win rate,CI,length-controlled") and len(results) == 1 + len(METHODS) * 2 + 2
    md = out.with_suffix(".md").read_text()
    assert md.startswith("| task | method | model |") and "| xsum | srpo vs dpo |" in md
    page, problems, _, _ = _open(browser, out)
    header = page.locator("table#results th", has_text="win rate").first
    header.click()
    column = [float(t) for t in page.locator("table#results tbody tr td:nth-child(7)").all_inner_texts()]
    assert column == sorted(column)
    header.click()
    column = [float(t) for t in page.locator("table#results tbody tr td:nth-child(7)").all_inner_texts()]
    assert column == sorted(column, reverse=True) and problems == []
    with page.expect_download() as download:
        page.click("#results-export-csv")
    assert Path(download.value.path()).read_text().splitlines() == results and download.value.suggested_filename == "leaderboard.csv"
    # the paired differences, as a paper would quote them: beside the page and from its buttons
    paired = json.loads((run / "summary.json").read_text())["paired"]
    rows = list(csv.reader(io.StringIO((tmp_path / "board-paired.csv").read_text())))
    assert rows[0][:7] == ["task", "comparison", "revision", "difference", "CI", "p", "p (Holm)"] and len(rows) == 1 + len(paired) > 1
    assert [(row[3], row[6]) for row in rows[1:]] == [(f"{p['difference']:+.3f}", format(p["p_holm"], ".3g")) for p in paired]
    assert (tmp_path / "board-paired.md").read_text().startswith("| task | comparison | revision | difference | CI | p | p (Holm) |")
    for button, name in (("#paired-export-csv", "board-paired.csv"), ("#paired-export-md", "board-paired.md")):
        with page.expect_download() as download:
            page.click(button)
        assert Path(download.value.path()).read_text() == (tmp_path / name).read_text()
        assert download.value.suggested_filename == name.replace("board", "leaderboard")


def test_a_page_without_paired_comparisons_leaves_no_older_pages_paired_table_beside_it(tmp_path):
    """`--out board.html` again for a run of one method at revision 0 (no paired comparison): an
    earlier page's board-paired.csv would have read as this page's."""
    out = tmp_path / "board.html"
    assert run_cli("leaderboard", str(_fake_run(tmp_path / "two", n_examples=2, revisions=2)), "--out", str(out)).returncode == 0
    assert (tmp_path / "board-paired.csv").exists() and (tmp_path / "board-paired.md").exists()
    assert run_cli("leaderboard", str(_fake_run(tmp_path / "one", n_examples=2, revisions=1, methods=["srpo"])), "--out", str(out)).returncode == 0
    assert not (tmp_path / "board-paired.csv").exists() and not (tmp_path / "board-paired.md").exists()
    assert "one" in (tmp_path / "board.csv").read_text() and 'id="paired"' not in out.read_text()


def test_large_runs_render_lazily(browser, tmp_path):
    run = _fake_run(tmp_path / "run", n_examples=1024, revisions=6)
    out = tmp_path / "board.html"
    assert run_cli("leaderboard", str(run), "--out", str(out)).returncode == 0
    page, problems, _, _ = _open(browser, out)
    assert problems == []
    assert page.inner_text("#browser-count") == "of 1024"
    assert page.locator("#browser .cell").count() == 1 + len(METHODS) * 6  # one example in the DOM, not 1024
    page.fill("#browser-index", "1024")
    page.dispatch_event("#browser-index", "change")
    assert "Example ex1023" in page.inner_text("#browser")


def test_several_runs_on_one_page(browser, tmp_path):
    a = _fake_run(tmp_path / "a", n_examples=2, revisions=2, methods=["srpo"])
    b = _fake_run(tmp_path / "b", n_examples=2, revisions=2, methods=["dpo"])
    out = tmp_path / "both.html"
    assert run_cli("leaderboard", str(a), str(b), "--out", str(out)).returncode == 0
    page, problems, _, _ = _open(browser, out)
    assert problems == [] and page.locator("#browser-run option").count() == 2
    assert "srpo (a)" in out.read_text() and "dpo (b)" in out.read_text()


def test_a_wide_table_scrolls_in_its_box_not_the_page(browser, tmp_path):
    """The results table has 17 columns: on a laptop-wide window it scrolls sideways in its own box,
    while the page, its text and the table's caption stay within the window."""
    run = _fake_run(tmp_path / "run", n_examples=2, revisions=2)
    out = tmp_path / "board.html"
    assert run_cli("leaderboard", str(run), "--out", str(out)).returncode == 0
    page, problems, _, _ = _open(browser, out, width=800)
    window = page.evaluate("() => document.documentElement.clientWidth")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= window and problems == []
    box = page.locator("table#results").locator("xpath=..")
    assert box.evaluate("e => e.scrollWidth > e.clientWidth") and box.evaluate("e => e.getBoundingClientRect().right") <= window
    box.focus()
    page.keyboard.press("ArrowRight")
    # the keys scroll it too; Chromium animates a key scroll over a few frames, so wait (up to 5 s) for it to move
    page.wait_for_function("e => e.scrollLeft > 0", arg=box.element_handle(), timeout=5000)
