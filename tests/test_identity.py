"""What a feature file and a result file say they hold is what they hold.

Feature keys: every setting that moves features (padding and its batch size, truncation,
pooling dtype, the precision profile, the image decoder) makes its own cache file. Result
files: the samples actually scored (first-N hash and n) and the dataset they come from; the
worker refuses data other than the data planned on; a local folder is one dataset however
its path is spelt; version-1 files still load.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_fidelity import VariedCaptions, tiny_gpt2  # noqa: F401 - a fixture

from prh_bench.check import CheckError, compare_runs
from prh_bench.datasets import first_n_hash
from prh_bench.executors import ExtractionUnit
from prh_bench.extract import extract_features
from prh_bench.images import DECODE_VERSION
from prh_bench.registry import get_dataset, get_model
from prh_bench.results import read_result
from prh_bench.runner import RunConfig, run
from prh_bench.store import FeatureKey, feature_key
from prh_bench.worker import run_unit
from prh_bench_plugins.hf_language import HFLanguageAdapter

import runner_plugin

GOOD = "tiny/pixels-a,tiny/words-a"


@pytest.fixture
def tiny(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def tiny_run(tmp_path, **kw):
    base = dict(models=GOOD, dataset="tiny-shapes", output=str(tmp_path / "results"), topk=3)
    # identity, not uncertainty: half-samples of a --limit 6 run are too small for topk = 3
    config = RunConfig(**{**base, "null_permutations": 0, "replicates": 0, **kw})
    return read_result(run(config, progress=False, log=lambda m: None).path)


# --------------------------------------------------------------------------- feature keys


def test_every_feature_variant_gets_its_own_file_in_one_cache(tiny_gpt2, tmp_path):  # noqa: F811
    """Per-batch padding at two batch sizes, and the reference profile's pooling, never share."""
    encoder = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2, causal=False)
    causal = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2)
    variants = {
        "batch-2": encoder.with_options(batch_size=2),
        "batch-3": encoder.with_options(batch_size=3),
        "exact": causal.for_precision("exact"),
        "reference": causal.for_precision("reference"),
        # global padding makes the batch size irrelevant: it stays out of the key
        "exact-batch-2": causal.with_options(batch_size=2),
    }
    dataset = VariedCaptions(n=6)
    keys = {name: feature_key(a, dataset, "float32") for name, a in variants.items()}
    assert keys["exact"] == keys["exact-batch-2"]
    assert "pad=right-batch@2" in keys["batch-2"].preprocessing
    assert "pool_dtype=model" in keys["reference"].preprocessing
    assert "pool_dtype=float32" in keys["exact"].preprocessing
    distinct = {name: k for name, k in keys.items() if name != "exact-batch-2"}
    assert len({k.digest for k in distinct.values()}) == len(distinct)
    opts = dict(cache_dir=tmp_path, num_workers=0, progress=False, device="cpu")
    files = {name: extract_features(variants[name], dataset, **opts) for name in distinct}
    for name in distinct:  # each variant reads back its own file, and only it
        again = extract_features(variants[name], dataset, **opts)
        assert again.from_cache and again.path == files[name].path
        assert again.meta["digest"] == keys[name].digest
        assert all(torch.equal(a, b) for a, b in zip(again.layers, files[name].layers, strict=True))
    assert extract_features(variants["exact-batch-2"], dataset, **opts).from_cache


def test_vision_keys_hold_the_image_decoder_version(tiny):
    dataset = get_dataset("tiny-shapes")
    vision = feature_key(get_model("tiny/pixels-a"), dataset, "float32")
    language = feature_key(get_model("tiny/words-a"), dataset, "float32")
    assert vision.decode_version == DECODE_VERSION and language.decode_version == ""
    assert vision.as_dict()["decode_version"] == DECODE_VERSION


def test_the_precision_profile_is_checked():
    from prh_bench import InvalidInputError
    from prh_bench.runner import ConfigError

    with pytest.raises(ConfigError, match="precision must be one of exact, reference"):
        RunConfig(precision="fast")
    with pytest.raises(InvalidInputError, match="precision must be one of"):
        runner_plugin.MODELS[0].for_precision("fast")
    assert runner_plugin.MODELS[0].for_precision("reference") is runner_plugin.MODELS[0]


# --------------------------------------------------------------------------- result files


def test_a_result_records_the_samples_scored_and_the_full_dataset(tiny):
    full = get_dataset("tiny-shapes").content_hash
    limited = tiny_run(tiny, limit=6).dataset
    assert (limited.n, limited.full_n) == (6, 18)
    assert limited.content_hash == first_n_hash(full, 6) and limited.full_content_hash == full
    whole = tiny_run(tiny).dataset
    assert (whole.n, whole.full_n, whole.content_hash, whole.full_content_hash) == (
        18,
        18,
        full,
        full,
    )


def test_check_refuses_runs_on_other_samples_in_one_line(tiny, run_cli):
    six, eight = tiny_run(tiny, limit=6), tiny_run(tiny, limit=8)
    with pytest.raises(CheckError) as err:
        compare_runs(six, eight)
    message = str(err.value)
    assert "\n" not in message and "n=6" in message and "n=8" in message
    assert six.dataset.content_hash[:12] in message and eight.dataset.content_hash[:12] in message


def test_the_worker_refuses_data_other_than_planned(tiny):
    unit = ExtractionUnit(
        model_id="tiny/words-a",
        dataset="tiny-shapes",
        dataset_hash="0" * 64,
        cache_dir=str(tiny / "cache"),
        device="cpu",
    )
    result = run_unit(unit, in_process=True)
    actual = get_dataset("tiny-shapes").content_hash
    assert not result.ok and "\n" not in result.error
    assert actual[:16] in result.error and "0" * 16 in result.error
    assert "planned on" in result.error
    good = run_unit(ExtractionUnit(**{**vars(unit), "dataset_hash": actual}), in_process=True)
    assert good.ok


def test_a_local_folder_is_one_dataset_however_its_path_is_spelt(tmp_path, monkeypatch):
    from test_datasets import make_folder, png_bytes

    folder = make_folder(
        tmp_path, [{"file": "a.png", "caption": "red"}], {"a.png": png_bytes("red")}
    )
    os.symlink(folder, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    spellings = [
        f"local:{folder}",
        f"local:{folder}/",
        f"local:{folder.name}",
        f"local:./{folder.name}/../{folder.name}",
        "local:link",
    ]
    opened = [get_dataset(s) for s in spellings]
    assert {d.id for d in opened} == {f"local:{folder.resolve()}"}
    assert len({d.content_hash for d in opened}) == 1


# --------------------------------------------------------------------------- version 1


def as_version_1(path, out):
    """A version-2 result written as prh-bench wrote version 1 (no new fields, full hash)."""
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    data.pop("precision")
    ds = data["dataset"]
    ds["content_hash"] = ds.pop("full_content_hash")
    ds.pop("full_n")
    for m in data["models"]:
        m.pop("fingerprint")
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("limit", [None, 6, 50])
def test_version_1_files_load_with_their_data_identity(tiny, limit):
    new = tiny_run(tiny, limit=limit)
    path = sorted((tiny / "results" / "tiny-shapes").glob("*.json"))[-1]
    old = read_result(as_version_1(path, tiny / "v1.json"))
    assert old.schema_version == 1 and old.precision is None
    assert all(m.fingerprint is None for m in old.models)
    # the scored samples' hash follows from version 1's full hash and n
    assert old.dataset.content_hash == new.dataset.content_hash
    assert old.dataset.full_content_hash == new.dataset.full_content_hash
    assert old.dataset.full_n == (None if limit == 6 else 18)


def test_check_on_a_version_1_baseline_says_fingerprints_are_unavailable(tiny, run_cli):
    tiny_run(tiny, limit=6)
    path = sorted((tiny / "results" / "tiny-shapes").glob("*.json"))[-1]
    old = as_version_1(path, tiny / "v1.json")
    result = run_cli("check", "--baseline", str(old), str(path))
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "fingerprints" in line]
    assert len(notes) == 1 and "unavailable" in notes[0] and "tiny/pixels-a" in notes[0]
    assert "precision profile is none (version 1)" in result.output


def test_a_language_key_is_the_same_without_a_decoder(tiny):
    """Language models never decode images: their keys, and so their files, stay as they were."""
    key = feature_key(get_model("tiny/words-a"), get_dataset("tiny-shapes"), "float32")
    assert "decode_version" not in key.as_dict()
    assert FeatureKey(**key.as_dict()) == key
