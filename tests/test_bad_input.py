"""The bad-input matrix: each case is one `Error: ...` line, a non-zero exit, and nothing
already written is lost. (Metric-level cases — NaN/inf features, mismatched N, wrong rank,
topk out of range — are in tests/test_metrics.py and tests/test_align.py.)"""

from __future__ import annotations

import errno
import json
import pathlib
import re

import pytest
from click.testing import CliRunner

import prh_bench
from prh_bench.cli import cli

import runner_plugin

GOOD = "tiny/pixels-a,tiny/words-a"


@pytest.fixture
def tiny(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def prh(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run(tmp, *extra, output="out"):
    base = [
        "run",
        "--models",
        GOOD,
        "--dataset",
        "tiny-shapes",
        "--topk",
        "3",
        "--null-permutations",
        "0",
        "--output",
        str(tmp / output),
    ]
    return prh(*base, *extra)


def one_error_line(result, code=1):
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    return errors[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--models", "tiny/pixel-a"], "Error: unknown model 'tiny/pixel-a'. Did you mean: "),
        (
            ["--dataset", "tiny-shape"],
            "Error: unknown dataset 'tiny-shape'. Did you mean: tiny-shapes",
        ),
        (["--metric", "mutual_kn"], "Error: unknown metric 'mutual_kn'. Did you mean: mutual_knn"),
        (["--topk", "18"], "Error: topk must be < N (the number of samples, 18), got topk=18"),
        (["--topk", "0"], "Error: topk must be >= 1, got 0"),
    ],
)
def test_unknown_ids_and_bad_topk(tiny, args, message):
    assert one_error_line(run(tiny, *args)).startswith(message)


def test_nan_features_name_model_and_layer(tiny):
    line = one_error_line(
        prh(
            "run",
            "--models",
            "tiny/words-a,tiny/nan",
            "--dataset",
            "tiny-shapes",
            "--output",
            str(tiny / "o"),
        )
    )
    assert "tiny/nan" in line and "NaN" in line and "layer 1" in line


def local_set(folder: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    from PIL import Image

    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_corrupt_image_names_row_and_file(tiny):
    rows = [{"file": f"{i}.png", "caption": f"red {i}"} for i in range(6)]
    folder = local_set(tiny / "set", rows)
    (folder / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    line = one_error_line(run(tiny, "--dataset", f"local:{folder}", "--topk", "2"))
    assert "3.png" in line and ("row 4" in line or "sample 3" in line)


def test_empty_caption_names_row_and_file(tiny):
    rows = [{"file": f"{i}.png", "caption": "" if i == 2 else f"red {i}"} for i in range(6)]
    folder = local_set(tiny / "set", rows)
    line = one_error_line(run(tiny, "--dataset", f"local:{folder}", "--topk", "2"))
    assert "2.png" in line and "caption" in line and "row 3" in line


def thin_png() -> bytes:
    """60000 x 1 pixels in a few hundred bytes: a model's resize would allocate gigabytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (60000, 1)).save(buf, format="PNG")
    return buf.getvalue()


def test_hostile_image_in_a_run_is_one_line(tiny):
    rows = [{"file": f"{i}.png", "caption": f"red {i}"} for i in range(6)]
    folder = local_set(tiny / "set", rows)
    (folder / "3.png").write_bytes(thin_png())
    line = one_error_line(run(tiny, "--dataset", f"local:{folder}", "--topk", "2"))
    assert "sample 3 (row 4, 3.png): extreme aspect ratio (60000 x 1" in line
    assert "skip_bad=True" in line


def test_hostile_images_are_skipped_with_skip_bad(tiny, caplog):
    from test_datasets import png_header

    rows = [{"file": f"{i}.png", "caption": f"red {i}"} for i in range(6)]
    folder = local_set(tiny / "set", rows)
    (folder / "1.png").write_bytes(png_header(30000, 30000))  # a decompression bomb
    (folder / "4.png").write_bytes(thin_png())
    shown = prh("datasets", "show", str(folder), "-o", "skip_bad=true")
    assert shown.exit_code == 0 and "4 samples" in shown.output
    [warning] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "skipped 2 bad row(s) of 6 (rows 2, 5)" in warning
    assert "row 2 (1.png): a possible decompression bomb" in warning
    assert "Traceback" not in shown.output


def test_16_bit_images_score_as_their_8_bit_twins(tiny):
    """No silent wrong result: a 16-bit PNG decodes to its 8-bit content, not to white."""
    import numpy as np
    from PIL import Image

    rows = [{"file": f"{i}.png", "caption": f"grey pattern {i}"} for i in range(8)]
    eight, sixteen = tiny / "eight", tiny / "sixteen"
    for folder in (eight, sixteen):
        folder.mkdir()
        (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(8):
        levels = (np.arange(256).reshape(16, 16) * (i + 1) + 37 * i) % 256
        Image.fromarray(levels.astype(np.uint8)).save(eight / f"{i}.png")
        deep = levels * 256 + 100  # the same picture, 16 bits a sample (any low byte)
        Image.fromarray(deep.astype(np.uint16)).save(sixteen / f"{i}.png")
    assert Image.open(sixteen / "0.png").mode == "I;16"
    for folder in (eight, sixteen):
        result = run(tiny, "--dataset", f"local:{folder}", "--topk", "2", output=folder.name)
        assert result.exit_code == 0, result.output
    first = prh_bench.load_results(tiny / "eight")
    second = prh_bench.load_results(tiny / "sixteen")
    assert len(first) and list(first["value"]) == list(second["value"])


def test_truncated_cache_file_is_recomputed(tiny):
    assert run(tiny, output="first").exit_code == 0
    [feature_file] = list((tiny / "cache").glob("features/*/tiny--pixels-a/*.safetensors"))
    feature_file.write_bytes(feature_file.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="unreadable .*recomputing it"):
        again = run(tiny, output="second")
    assert again.exit_code == 0
    first = prh_bench.load_results(tiny / "first")
    second = prh_bench.load_results(tiny / "second")
    assert list(first["value"]) == list(second["value"])


def test_malformed_results_json(tiny):
    bad = tiny / "bad.json"
    bad.write_text('{"schema_version": 1, "run_id": ')
    line = one_error_line(prh("check", "--baseline", str(bad), str(bad)))
    assert line == f"Error: {bad}: not valid JSON (line 1: Expecting value)"


def test_foreign_json(tiny):
    other = tiny / "package.json"
    other.write_text('{"name": "left-pad"}')
    line = one_error_line(prh("correlate", str(other), "--vision", "x"))
    assert line == f"Error: {other}: not a prh-bench result file (no schema_version/run_id)"


def test_plugin_that_raises_inside_its_hook(tiny):
    import types

    boom = types.ModuleType("boom")

    def register_models(register):
        raise RuntimeError("cannot reach the model zoo")

    boom.register_models = prh_bench.hookimpl(register_models)
    prh_bench.plugins.register_plugin(boom, name="boom")
    line = one_error_line(prh("models"))
    assert line == (
        "Error: plugin 'boom' raised inside register_models: RuntimeError: cannot "
        "reach the model zoo. Fix or disable it (PRH_BENCH_LOAD_PLUGINS)."
    )


def test_plugin_that_registers_a_duplicate_id(tiny):
    import types

    dup = types.ModuleType("dup")
    dup.register_models = prh_bench.hookimpl(
        lambda register: register(runner_plugin.Tiny("tiny/pixels-a", "vision", 9))
    )
    prh_bench.plugins.register_plugin(dup, name="dup")
    line = one_error_line(run(tiny))
    assert "model id 'tiny/pixels-a' is registered twice" in line
    assert "'tiny'" in line and "'dup'" in line


def test_disk_full_while_writing_the_result_loses_nothing(tiny, monkeypatch):
    assert run(tiny).exit_code == 0
    [earlier] = list((tiny / "out" / "tiny-shapes").glob("*.json"))
    before = earlier.read_bytes()

    import prh_bench.storage as storage

    real_replace = storage.os.replace

    def full_disk(src, dst):
        if str(dst).endswith(".json") and "tiny-shapes" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", full_disk)
    line = one_error_line(run(tiny))
    assert line.startswith("Error: no space left on the device while writing ")
    assert "what was written before is intact" in line
    files = list((tiny / "out").rglob("*"))
    assert [p for p in files if p.is_file()] == [earlier]  # no torn or temporary file left
    assert earlier.read_bytes() == before


def test_permission_denied_on_the_cache_directory(tiny, monkeypatch):
    locked = tiny / "locked-cache"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if locked in (self, *self.parents):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    line = one_error_line(run(tiny, "--cache-dir", str(locked)))
    assert line.startswith("Error: permission denied writing ")
    assert "choose a writable --cache-dir / --output" in line
    assert not (tiny / "out").exists()


def test_malformed_config_file(tiny):
    cfg = tiny / "run.toml"
    cfg.write_text("[run]\nmodels = 'offline'\npairs = 3\nmodelz = 'x'\n")
    line = one_error_line(prh("run", "--config", str(cfg)))
    assert line.startswith(f"Error: {cfg}, line 4: unknown key 'modelz'; known keys: ")
    assert ", models, " in line and ", topk" in line


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    from prh_bench.storage import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------- issue 14 (runtime):
# options, environment, run.toml, disk full inside safetensors, checks before any model loads


def test_disk_full_inside_safetensors_is_one_line(tiny, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    line = one_error_line(run(tiny))
    assert line.startswith("Error: no space left on the device while writing ")
    assert not list((tiny / "cache").rglob("*.tmp"))


@pytest.mark.parametrize(
    ("device", "code", "message"),
    [
        ("gpu0", 2, "Error: Invalid value for '--device': device must be cpu, cuda, cuda:N or mps"),
        ("cuda:99", 1, "Error: device 'cuda:99' is not here: this machine has "),
    ],
)
def test_bad_device_is_one_line_even_with_cached_features(tiny, device, code, message):
    assert run(tiny).exit_code == 0  # the features are in the cache now
    assert one_error_line(run(tiny, "--device", device), code=code).startswith(message)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("workers=two", "Error: executor 'local' option 'workers' must be an integer, got 'two'"),
        ("workers=true", "Error: executor 'local' option 'workers' must be an integer, got True"),
        ("worker=2", "Error: executor 'local' has no option 'worker'; its options: workers"),
    ],
)
def test_executor_option_of_the_wrong_type_is_one_line(tiny, option, message):
    assert one_error_line(run(tiny, "--executor-option", option)) == message


def test_bad_checkpoint_seconds_is_one_line(tiny, monkeypatch):
    assert run(tiny).exit_code == 0  # cached features must not hide it
    monkeypatch.setenv("PRH_BENCH_CHECKPOINT_SECONDS", "abc")
    line = one_error_line(run(tiny))
    assert line == (
        "Error: PRH_BENCH_CHECKPOINT_SECONDS must be a number of seconds >= 0 (e.g. 30), got 'abc'"
    )


def test_serve_port_out_of_range_is_one_line(tiny):
    line = one_error_line(prh("leaderboard", "serve", str(tiny), "--port", "70000"), code=2)
    assert "70000 is not in the range 0<=x<=65535" in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models = 5\n", "line 1: key 'models' must be a string, got 5"),
        ("dataset = ['a']\n", "line 1: key 'dataset' must be a string, got ['a']"),
        ("metrics = [1, 2]\n", "line 1: key 'metrics' must be a list of strings, got [1, 2]"),
        ("metrics = 3\n", "line 1: key 'metrics' must be a string or a list of strings, got 3"),
        ("executor_options = 'workers=2'\n", "key 'executor_options' must be a table"),
        ("topk = 5\n[run]\nmodels = 'offline'\n", "key(s) topk sit outside [run] and would be"),
    ],
)
def test_run_toml_wrong_types_and_stray_top_level_keys(tiny, text, message):
    cfg = tiny / "run.toml"
    cfg.write_text(text)
    line = one_error_line(prh("run", "--config", str(cfg)))
    assert line.startswith(f"Error: {cfg}") and message in line


def test_topk_against_n_fails_before_any_model_loads(tiny, monkeypatch):
    log = tiny / "encoded.log"
    monkeypatch.setenv("TINY_LOG", str(log))
    line = one_error_line(run(tiny, "--topk", "18", "--limit", "30"))
    assert line == "Error: topk must be < N (the number of samples, 18), got topk=18"
    line = one_error_line(run(tiny, "--topk", "5", "--limit", "5"))
    assert line == "Error: topk must be < N (the number of samples, 5), got topk=5"
    assert not log.exists() and not (tiny / "cache").exists()  # no model ran, nothing stored


# ---------------------------------------------------------------------------------------------
# Issue 14 (reliability round two): result files, downstream scores and JSON input.
# A result file never holds NaN/Infinity or an integer beyond 64 bits: refused on read and,
# before anything is written, on the exact text the writer would write.


def result_file(tiny):
    assert run(tiny).exit_code == 0
    [path] = (tiny / "out" / "tiny-shapes").glob("*.json")
    return path


@pytest.mark.parametrize(
    "edit,where",
    [
        (lambda d: d["models"][1].update(bpb="NaN"), "model 'tiny/words-a', field bpb is nan"),
        (
            lambda d: d["scores"][0].update(value="-Infinity"),
            "score 'tiny/words-a' vs 'tiny/pixels-a' (mutual_knn), field value is -inf",
        ),
        (
            lambda d: d["scores"][0]["matrix"][0].__setitem__(0, "1e999"),
            "score 'tiny/words-a' vs 'tiny/pixels-a' (mutual_knn), field matrix.0.0 is inf",
        ),
        (
            lambda d: d["dataset"].update(n=2**70),
            "field dataset.n is 11805916207174113034... (too large an integer)",
        ),
    ],
)
def test_result_files_with_non_finite_numbers_are_refused_by_name(tiny, edit, where):
    path = result_file(tiny)
    data = json.loads(path.read_text())
    edit(data)
    # NaN, Infinity and 1e999 as a JSON writer other than prh-bench's would put them
    text = json.dumps(data)
    for token in ("NaN", "-Infinity", "1e999"):
        text = text.replace(f'"{token}"', token)
    path.write_text(text)
    line = one_error_line(prh("check", "--baseline", str(path), str(path)))
    assert line.startswith(f"Error: {path}: {where}")
    assert "a result file holds only finite numbers" in line


def test_the_writer_refuses_what_the_reader_would_refuse_and_keeps_the_old_file(tiny):
    from prh_bench.results import ResultsError, read_result, write_result

    path = result_file(tiny)
    before = path.read_bytes()
    result = read_result(path)
    result.model("tiny/words-a").bpb = float("nan")
    with pytest.raises(ResultsError) as caught:
        write_result(result, tiny / "out")
    assert str(caught.value).startswith(
        f"{path} (not written): model 'tiny/words-a', field bpb is nan (not a finite number)"
    )
    assert path.read_bytes() == before and len(list(path.parent.iterdir())) == 1


def test_run_with_a_nan_downstream_value_names_file_line_and_model(tiny):
    down = tiny / "down.csv"
    down.write_text("model,metric,value\ntiny/words-a,hellaswag,0.4\ntiny/pixels-a,hellaswag,nan\n")
    line = one_error_line(run(tiny, "--downstream", str(down)))
    assert line == (
        f"Error: {down}, line 3, model 'tiny/pixels-a': value 'nan' is not a finite number; "
        "give the score, or leave the row out"
    )
    assert not (tiny / "out").exists()  # refused before any model was loaded


@pytest.mark.parametrize(
    "text,message",
    [
        ("model,metric,value\nm,x,inf\n", "line 2, model 'm': value 'inf' is not a finite"),
        ("model,metric,value\nm,x,1\nm,x,2\n", "line 3, model 'm': x is given twice (lines 2 and"),
        ("model,metric,value\n,x,1\n", "line 2: a row needs a model and a metric"),
        ("model,metric,value\nm,x\n", "line 2, model 'm': value None is not a number"),
        ("model,metric,value\nm,x," + "9" * 200_000 + "\n", "line 2: not valid CSV (field larger"),
    ],
)
def test_downstream_csv_rows_that_cannot_be_used(tmp_path, text, message):
    from prh_bench.results import DownstreamError, read_downstream_csv

    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DownstreamError, match=re.escape(message)):
        read_downstream_csv(path)


def test_lm_eval_nan_is_left_out_of_the_csv_with_a_warning(tmp_path, run_cli):
    from prh_bench.results import read_downstream_csv

    out = tmp_path / "down.csv"
    out.write_text("model,metric,value,source\nm/1,hellaswag/acc,0.3,old\nm/1,arc/acc,0.2,old\n")
    src = tmp_path / "lm.json"
    src.write_text(
        '{"model_name": "m/1", "results": {"hellaswag": {"acc,none": NaN}, '
        '"arc": {"acc,none": 0.25}, "gsm8k": {"exact_match,none": Infinity}}}'
    )
    result = run_cli("downstream", "import", str(src), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert (
        "left out 2 score(s) the files give as NaN or Infinity: "
        "lm.json: hellaswag/acc, lm.json: gsm8k/exact_match\n" in result.output
    )
    assert "imported 1 scores from 1 file(s)" in result.output
    assert "nan" not in out.read_text().lower()
    table = read_downstream_csv(out)  # the file it wrote reads back
    assert {k: d.value for k, d in table["m/1"].items()} == {"arc/acc": 0.25}  # stale row gone


def test_correlate_with_an_undefined_correlation_keeps_the_file_readable(tiny):
    from prh_bench.results import read_result

    path = result_file(tiny)
    down = tiny / "flat.csv"
    data = json.loads(path.read_text())
    language = [m["id"] for m in data["models"] if m["modality"] == "language"]
    # three language models with one constant downstream score: r is undefined
    for i in range(2):
        copy = dict(data["models"][1], id=f"tiny/words-copy{i}")
        data["models"].append(copy)
        for s in list(data["scores"]):
            if s["model_a"] == language[0]:
                data["scores"].append(dict(s, model_a=copy["id"]))
    path.write_text(json.dumps(data))
    ids = [language[0], "tiny/words-copy0", "tiny/words-copy1"]
    down.write_text("model,metric,value\n" + "".join(f"{m},flat,0.5\n" for m in ids))
    out = prh("correlate", str(path), "--vision", "tiny/pixels-a", "--downstream", str(down))
    assert out.exit_code == 0, out.output
    row = next(line for line in out.output.splitlines() if line.startswith("| flat"))
    assert row.count("undefined") == 3 and " 0.000" not in row  # never p = 0
    [saved] = [c for c in read_result(path).correlations if c.downstream == "flat"]
    assert saved.pearson is None and saved.p_value is None and saved.pearson_ci is None


def test_huge_scores_still_correlate():
    """Pearson's r is scale-free: scores near the float limit (whose sums overflowed to an
    undefined r with p = 0) correlate exactly as the same scores scaled down."""
    import math

    from prh_bench.correlate import correlation

    plain = [0.3, -0.2, 0.9, 0.1]
    huge = correlation([1, 2, 3, 4], [math.ldexp(v, 1020) for v in plain], resamples=100)
    assert huge == correlation([1, 2, 3, 4], plain, resamples=100)
    assert huge["pearson"] is not None and 0 < huge["p_value"] <= 1


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"schema_version": 1, "run_id": "\xff\xfe"}', "not UTF-8 text (byte 33)"),
        (DEEP, "not valid JSON (nested deeper than 64 levels)"),
        (b"[" * 80 + b"]" * 80, "not valid JSON (nested deeper than 64 levels)"),
        (b'{"n": ' + b"7" * 5000 + b"}", "not valid JSON (Exceeds the limit"),
    ],
    ids=["non-utf8", "deep", "deeper-than-64", "long-int"],
)
@pytest.mark.parametrize("command", ["check", "correlate", "leaderboard", "downstream"])
def test_hostile_json_is_one_line_for_every_reader(tiny, command, content, message):
    bad = tiny / "bad.json"
    bad.write_bytes(content)
    args = {
        "check": ["check", "--baseline", str(bad), str(bad)],
        "correlate": ["correlate", str(bad), "--vision", "x"],
        "leaderboard": ["leaderboard", "build", str(bad), "-o", str(tiny / "site")],
        "downstream": ["downstream", "import", str(bad), "-o", str(tiny / "d.csv")],
    }[command]
    line = one_error_line(prh(*args))
    if command == "downstream":  # names the format it expected
        message = message.replace("valid JSON", "valid lm-evaluation-harness JSON")
    assert f"{bad}: {message}" in line


def test_a_fifo_is_refused_without_blocking(tiny):
    import os

    fifo = tiny / "pipe.json"
    os.mkfifo(fifo)
    line = one_error_line(prh("check", "--baseline", str(fifo), str(fifo)))
    assert line == f"Error: {fifo}: not a regular file (a folder, FIFO or device); name a file"
    down = tiny / "pipe.csv"
    os.mkfifo(down)
    line = one_error_line(prh("correlate", str(fifo), "--vision", "x", "--downstream", str(down)))
    assert "not a regular file" in line
