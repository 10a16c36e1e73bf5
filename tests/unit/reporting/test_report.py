"""HTML reports of run folders: self-contained pages, the numbers they show, the SVG plots, missing
or damaged optional files, escaping, run comparison, and (where Chromium is installed) rendering."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from flowvae.config import save_config
from flowvae.errors import CheckpointError
from flowvae.presets import get_preset
from flowvae.report import compare_runs, write_report

# step 0 has no training loss yet (the trainer writes train_bpd: null there)
METRICS = [
    {"step": 0, "train_bpd": None, "test_elbo_bpd": 8.38354, "test_iw_bpd": 8.38354, "test_kl": 0.0167,
     "test_k": 1, "test_n": 300, "lr": 4e-05, "skipped_steps": 0, "time_s": 3.1},
    {"step": 250, "train_bpd": 6.21224, "test_elbo_bpd": 5.97484, "test_iw_bpd": 5.97484, "test_kl": 0.1056,
     "test_k": 1, "test_n": 300, "lr": 0.0018, "skipped_steps": 0, "time_s": 18.98},
    {"step": 500, "train_bpd": 5.53276, "test_elbo_bpd": 5.51169, "test_iw_bpd": 5.51169, "test_kl": 0.0357,
     "test_k": 1, "test_n": 300, "lr": 0.0016, "skipped_steps": 1, "time_s": 36.62},
    {"step": 750, "train_bpd": 5.31234, "test_elbo_bpd": 5.41237, "test_iw_bpd": 5.41237, "test_kl": 0.0831,
     "test_k": 1, "test_n": 300, "lr": 0.0015, "skipped_steps": 1, "time_s": 3725.4},
]
PROBE = {"dataset": "digits/test", "protocol": "standard", "results": {
    "z": {"accuracy": 0.6566666666666666, "C": 0.03, "cv_accuracy": 0.628, "n_train": 1497, "n_test": 300,
          "dim": 8, "protocol": "standard"},
    "v": {"accuracy": 0.8, "C": 0.03, "cv_accuracy": 0.83, "n_train": 1497, "n_test": 300, "dim": 64,
          "protocol": "standard"}}}
FID = {"fid": 123.456, "kid_mean": 0.01234, "kid_std": 0.00056, "n_fake": 1000, "n_real": 300,
       "inception_sha256": "ab" * 32, "temperature": 1.0, "dataset": "digits/test"}
ENV = {"flowvae": "0.1.0", "git_commit": "0214f06093d6ecc3bc39f936b4a37aff581a69d9", "python": "3.11.7",
       "torch": "2.13.0+cpu", "numpy": "2.4.6", "platform": "Linux-x86_64", "processor": "x86_64",
       "cpu_count": 2, "torch_threads": 2, "device": "cpu"}
EVAL = {"elbo_bpd": 5.1657, "iw_bpd": 5.1151, "kl": 0.0213, "k": 5, "n": 300, "roundtrip_images": 256,
        "roundtrip_mismatched_pixels": 0, "dataset": "digits/test"}
CHECK = {"ok": False, "checks": [{"name": "finite weights", "ok": True, "detail": "all 17 finite"},
                                 {"name": "round trip", "ok": False, "detail": "max error 0.5 > 1e-4"}]}


def _png(path: Path, size: tuple[int, int], seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_run(folder: Path, metrics: list[dict] = METRICS, full: bool = True) -> Path:
    """A run folder with the files a real `flowvae train` + `probe`/`fid`/`eval`/`check` leaves."""
    folder.mkdir(parents=True)
    save_config(get_preset("digits"), folder / "config.yaml")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if not full:
        return folder
    # 12 + 5 parameters; the ActNorm flag is a buffer and is not a parameter
    save_file({"decoder.conv.weight": torch.zeros(3, 4), "decoder.actnorm.log_scale": torch.zeros(5),
               "decoder.actnorm.initialized": torch.tensor(True)}, str(folder / "model.safetensors"),
              metadata={"format": "flowvae", "kind": "flowvae"})
    for i, t in enumerate((0.7, 1.0)):
        _png(folder / "samples" / f"samples_t{t:.2f}.png", (73, 73), i)
    _png(folder / "switch.png", (73, 37), 5)
    _png(folder / "interpolation.png", (100, 46), 6)
    (folder / "probe.json").write_text(json.dumps(PROBE))
    (folder / "fid_t1.00.json").write_text(json.dumps(FID))
    (folder / "environment.json").write_text(json.dumps(ENV))
    (folder / "eval.json").write_text(json.dumps(EVAL))
    (folder / "check.json").write_text(json.dumps(CHECK))
    return folder


class Page(HTMLParser):
    """The parts of a report a test looks at: ids, images, and polylines per SVG."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: set[str] = set()
        self.classes: list[str] = []
        self.imgs: list[dict] = []
        self.polylines: dict[str, list[str]] = {}
        self.sample_temps: list[str] = []
        self._svg: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        self.classes += (a.get("class") or "").split()
        if tag == "img":
            self.imgs.append(a)
        elif tag == "svg":
            self._svg = a.get("id")
        elif tag == "polyline":
            self.polylines.setdefault(self._svg, []).append(a["points"])
        if "sample-grid" in (a.get("class") or "").split():
            self.sample_temps.append(a.get("data-temperature"))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None


def _points(polyline: str) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.split()]


def _text(html_text: str) -> str:
    """The visible text, roughly: tags stripped."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_text))


def test_report_is_self_contained_and_shows_the_numbers(tmp_path):
    run = make_run(tmp_path / "demo")
    out = write_report(run)
    assert out == run / "report.html"
    text = out.read_text()
    page = Page(text)
    visible = _text(text)

    for key in ("summary", "bpd-plot", "kl-plot", "probe-table", "fid-table", "eval-table", "check-table",
                "config-table", "environment-table", "switch-grid", "interpolation-grid", "param-count"):
        assert key in page.ids, key
    # final numbers: the last test bits/dim and KL, the last train bits/dim, wall time of the last record
    assert "5.4124" in visible and "5.3123" in visible and "0.0831" in visible
    assert "3,725.4 s (1:02:05)" in visible
    assert re.search(r'id="param-count">17<', text)  # buffers are not parameters
    assert "65.67%" in visible and "80.00%" in visible
    assert "123.46" in visible and "0.0123 ± 0.0006" in visible
    assert "torch bilinear (older flowvae; not comparable)" in visible  # FID without "resize": the old pipeline
    assert "5.1151" in visible and "checks FAILED" in visible and "max error 0.5 &gt; 1e-4" in text
    assert "x86_64" in visible and "2.13.0+cpu" in visible
    assert page.sample_temps == ["0.70", "1.00"]

    # every image is embedded, and decodes to the PNG it came from
    assert len(page.imgs) == 4
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        assert data == ((run / "samples" / img["data-file"]) if img["data-file"].startswith("samples_t")
                        else (run / img["data-file"])).read_bytes()
    assert not re.search(r'(src|href)="(?!data:)', text), "the page must not refer to other files"

    # plots: one point per metrics record (train has none at step 0), x increasing with step
    train, test = page.polylines["bpd-plot"]
    assert len(_points(test)) == len(METRICS)
    assert len(_points(train)) == sum(m["train_bpd"] is not None for m in METRICS)
    xs = [x for x, _ in _points(test)]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    # lower bits/dim is drawn lower, i.e. with a larger SVG y
    ys = [y for _, y in _points(test)]
    assert ys[0] < ys[-1]
    (kl,) = page.polylines["kl-plot"]
    assert len(_points(kl)) == len(METRICS)


def test_missing_and_damaged_optional_files_are_left_out(tmp_path):
    run = make_run(tmp_path / "bare", metrics=[], full=False)
    (run / "metrics.jsonl").unlink()
    page = Page(write_report(run, tmp_path / "bare.html").read_text())
    assert "summary" in page.ids and "config-table" in page.ids
    for key in ("bpd-plot", "kl-plot", "probe-table", "fid-table", "eval-table", "check-table", "notes-section"):
        assert key not in page.ids, key
    assert page.imgs == []

    # damaged files are reported under Notes instead of failing the report
    run = make_run(tmp_path / "damaged")
    (run / "probe.json").write_text("{not json")
    (run / "switch.png").write_bytes(b"not a png")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 1000, "test_el')  # killed mid-write
    (run / "model.safetensors").write_bytes(b"\x00" * 5)
    text = write_report(run).read_text()
    page = Page(text)
    assert "notes-section" in page.ids and "probe-table" not in page.ids and "switch-grid" not in page.ids
    assert "probe.json could not be read" in text and "switch.png is not a PNG" in text
    assert "model.safetensors could not be read" in text
    assert len(_points(page.polylines["bpd-plot"][1])) == len(METRICS)


def test_not_a_run_folder_and_escaping(tmp_path):
    with pytest.raises(CheckpointError, match="no config.yaml"):
        write_report(tmp_path)
    (tmp_path / "config.yaml").write_text("- just\n- a list\n")
    with pytest.raises(CheckpointError):
        write_report(tmp_path)

    run = tmp_path / "a&b <i>"
    run.mkdir()
    cfg = get_preset("digits")
    cfg.name = "<script>alert(1)</script>"
    save_config(cfg, run / "config.yaml")
    text = write_report(run).read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a&amp;b &lt;i&gt;" in text and "<i>" not in text


def test_nan_metrics_do_not_break_the_plot(tmp_path):
    metrics = [dict(m) for m in METRICS]
    metrics[2]["test_elbo_bpd"] = math.nan  # a diverged evaluation
    run = make_run(tmp_path / "nan", metrics=metrics, full=False)
    page = Page(write_report(run).read_text())
    assert len(_points(page.polylines["bpd-plot"][1])) == len(METRICS) - 1
    single = make_run(tmp_path / "one", metrics=METRICS[:1], full=False)
    page = Page(write_report(single).read_text())
    assert len(_points(page.polylines["bpd-plot"][1])) == 1
    assert all(math.isfinite(v) for p in _points(page.polylines["bpd-plot"][1]) for v in p)


def test_compare_runs(tmp_path):
    a = make_run(tmp_path / "run_a")
    shorter = [dict(m, test_elbo_bpd=m["test_elbo_bpd"] - 1.5) for m in METRICS[:3]]
    b = make_run(tmp_path / "run_b", metrics=shorter, full=False)
    out = compare_runs([a, str(b)], tmp_path / "cmp" / "compare.html")
    text = out.read_text()
    page = Page(text)
    visible = _text(text)
    assert "compare-table" in page.ids and "compare-plot" in page.ids
    assert "run_a" in visible and "run_b" in visible
    assert "5.4124" in visible and "4.0117" in visible  # final test bits/dim of each
    assert "65.67%" in visible and "80.00%" in visible  # run_a's probe; run_b has none
    lines = page.polylines["compare-plot"]
    assert len(lines) == 2
    assert [len(_points(p)) for p in lines] == [len(METRICS), len(shorter)]
    assert page.imgs == []

    # two runs with the same folder name are told apart by their parents
    x, y = make_run(tmp_path / "x" / "run", full=False), make_run(tmp_path / "y" / "run", full=False)
    text = compare_runs([x, y], tmp_path / "same.html").read_text()
    assert 'data-run="x/run"' in text and 'data-run="y/run"' in text

    with pytest.raises(CheckpointError):
        compare_runs([a, tmp_path / "nothing"], tmp_path / "bad.html")
    with pytest.raises(ValueError):
        compare_runs([], tmp_path / "empty.html")


def _browser() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install -y chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("the selenium package is not installed (pip install selenium)")
    return chrome, driver


def test_report_renders_in_headless_chromium(tmp_path, monkeypatch):
    chrome, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Never let Selenium Manager go looking for (and downloading) a browser or driver of its own.
    monkeypatch.setenv("SE_OFFLINE", "true")
    run = make_run(tmp_path / "demo")
    page = write_report(run)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1600", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
        assert len(images) == 4 and all(c and w > 0 and h > 0 for c, w, h in images), images
        visible = driver.execute_script("return document.body.innerText;")
        for number in ("5.4124", "5.3123", "0.0831", "65.67%", "80.00%", "123.46"):
            assert number in visible, number
        lengths = driver.execute_script(
            "return Array.from(document.querySelectorAll('#bpd-plot polyline, #kl-plot polyline'))"
            ".map(p => p.getTotalLength());")
        assert len(lengths) == 3 and all(n > 0 for n in lengths)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert shot.stat().st_size > 0
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.width > 0 and im.height > 0
        # not a blank page: the screenshot has both dark text and a light background
        lo, hi = im.convert("L").getextrema()
        assert lo < 100 and hi > 200
    if os.environ.get("FLOWVAE_REPORT_SCREENSHOT"):  # keep the picture for a look by hand
        shutil.copy(shot, os.environ["FLOWVAE_REPORT_SCREENSHOT"])


def test_a_departing_run_plots_its_training_elbo_not_its_loss():
    from flowvae.reporting.html import curves_section  # noqa: PLC0415

    # the auxiliary decoder: a loss of about 10.7 "bits/dim" beside a bound of 3.5
    departing = [{**m, "train_elbo_bpd": None if m["train_bpd"] is None else m["train_bpd"] - 0.5,
                  "train_bpd": None if m["train_bpd"] is None else m["train_bpd"] + 7.0} for m in METRICS]
    plain = [{**m, "train_bpd": m["train_elbo_bpd"]} for m in departing]
    html = curves_section(departing)
    assert "the plain negative ELBO; the training loss, which departs from it here, is train_bpd" in html
    assert html.replace("the plain negative ELBO; the training loss, which departs from it here, is train_bpd in "
                        "metrics.jsonl", "the training loss") == curves_section([{k: v for k, v in m.items()
                                                                          if k != "train_elbo_bpd"} for m in plain])
    assert "departs" not in curves_section(METRICS)


def test_a_departing_run_summarises_its_training_elbo(tmp_path):
    departing = [{**m, "train_elbo_bpd": None if m["train_bpd"] is None else m["train_bpd"] - 0.5} for m in METRICS]
    text = write_report(make_run(tmp_path / "aux", metrics=departing)).read_text()
    assert "final train bits/dim (negative ELBO; the loss departs from it)" in text
    assert '<span id="final-train-bpd">4.8123</span>' in text  # 5.31234 - 0.5, not the loss
    plain = write_report(make_run(tmp_path / "paper")).read_text()
    assert '<span id="final-train-bpd">5.3123</span>' in plain and "departs" not in plain


def test_the_public_modules_keep_their_names():
    """flowvae.report and flowvae.hub stay the public homes of what moved into flowvae.reporting."""
    import flowvae.hub
    import flowvae.report
    from flowvae.reporting import card, compare, html

    assert flowvae.report.write_report is html.write_report and flowvae.report.compare_runs is compare.compare_runs
    assert flowvae.hub.model_card is card.model_card and flowvae.hub.HUB_DATASETS is card.HUB_DATASETS
    assert (flowvae.hub.CARD_FILE, flowvae.hub.SAMPLE_FILE, flowvae.hub.CONFIG_FILE, flowvae.hub.WEIGHTS_FILE) == (
        "README.md", "samples.png", "config.yaml", "model.safetensors")


def test_result_files_are_read_as_records_and_hand_made_ones_still_show(tmp_path):
    from flowvae.reporting.read import read_run, switch_result  # noqa: PLC0415
    from flowvae.runs.records import CheckResult, EvalResult, SwitchResult  # noqa: PLC0415

    run = make_run(tmp_path / "records")
    fractions = {"follow_z": 0.5, "follow_v": 0.3, "neither": 0.2, "saturated": 0.0}
    (run / "switch.json").write_text(json.dumps({
        "dataset": "digits/test", "pairs": 100, "classes": 10, "seed": 0, **fractions,
        "swapped": dict(fractions, follow_z=0.4), "test_accuracy": 0.9,
        "classifier": {"features": "pixels", "C": 1.0, "cv_accuracy": 0.8, "n_train": 500, "n_test": 100, "dim": 64}}))
    files = read_run(run)
    assert isinstance(files.eval, EvalResult) and isinstance(files.check, CheckResult)
    assert isinstance(switch_result(files), SwitchResult)
    text = write_report(run).read_text()
    assert 'data-decode="(v1, z2)"' in text and 'data-decode="(v2, z1)"' in text
    assert "5.1151" in text and "checks FAILED" in text

    # a file no writer of flowvae wrote (an ill-typed field) is shown as it is, escaped, not left out
    (run / "eval.json").write_text(json.dumps(dict(EVAL, iw_bpd="<b>5</b>")))
    assert not isinstance(read_run(run).eval, EvalResult)
    text = write_report(run).read_text()
    assert "5.1657" in text and "&lt;b&gt;5&lt;/b&gt;" in text and "<b>5</b>" not in text
