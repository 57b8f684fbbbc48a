"""Models by name, without writing a plugin: prefix handlers usable wherever a model id is.

- ``hf:ORG/NAME[@REVISION]``, ``hf:PATH``: any transformers language model; causal LM or
  encoder is read from its config.json (``architectures``, else ``is_decoder``/``model_type``).
- ``timm:NAME`` (hub weights), ``timm:FOLDER`` (a folder as ``timm.models.save_for_hf``
  writes it: config.json + model.safetensors), ``timm:NAME?checkpoint=FILE`` (a weights file
  for the architecture NAME). ViTs give the CLS token of every block, other models every stage.
- ``open_clip:ARCH/PRETRAINED`` (PRETRAINED: an open_clip tag or a checkpoint file): the
  image and the text tower; ``.../image`` or ``.../text`` names one.
- ``gguf:FILE``: a causal LM in a local GGUF file, dequantised once into the cache's weights/.

Options follow a ``?``, joined by ``&``: ``hf:gpt2?pooling=last&batch_size=8``; every option
of the family's ``with_options`` is accepted. Each handler only reads what the model is and
builds the family's own adapter, so a model by name extracts exactly as a registered one. Its
id is the canonical spelling (absolute paths, sorted options): ``get_model(id)`` opens an equal
adapter in any worker, and the id names its cache files.

The model libraries are imported when a handler opens a name, never when plugins load.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

from prh_bench import InvalidInputError, ModelAdapter, ModelError, hookimpl
from prh_bench.models import ModelPrefix, model_spec
from prh_bench_plugins.hf_language import HFLanguageAdapter, directory_fingerprint
from prh_bench_plugins.offline_models import GGUFCausalAdapter
from prh_bench_plugins.open_clip_models import OpenClipAdapter
from prh_bench_plugins.shared import (
    cached_commit,
    file_fingerprint,
    hub_cache,
    hub_error,
    offline,
    reachable,
    safetensors_parameters,
    weights_availability,
)
from prh_bench_plugins.timm_models import TimmVisionAdapter

#: options whose values are integers (``max_length`` also takes ``none``)
INTEGER_OPTIONS = ("batch_size", "max_length")
#: timm modules whose models are token transformers with a CLS token: the paper's ViT rule
VIT_MODULES = ("vision_transformer", "deit", "eva", "beit")


def looks_like_path(argument: str) -> bool:
    """A file-system path rather than a hub id (``NAME`` or ``ORG/NAME``)."""
    return argument.startswith(("/", ".", "~")) or argument.count("/") > 1 or "\\" in argument


def typed_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options as the adapters take them: integers where due (from a string in an id)."""
    out = dict(options)
    for key in INTEGER_OPTIONS:
        value = out.get(key)
        if not isinstance(value, str):
            continue
        if key == "max_length" and value.lower() == "none":
            out[key] = None
            continue
        try:
            out[key] = int(value)
        except ValueError:
            raise InvalidInputError(
                f"model '{name}': {key} must be an integer, got {value!r}"
            ) from None
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def by_name(adapter: ModelAdapter, options: dict[str, Any], *, source: str, notes: str) -> Any:
    """The adapter with its options, saying where its weights come from."""
    adapter.metadata.source = source
    adapter.metadata.notes = f"opened by name; {notes}"
    return adapter.with_options(**options) if options else adapter


# --------------------------------------------------------------------------- hf:


def is_causal(config: Any) -> bool:
    """A causal LM, told from its transformers config alone (no weights)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    causal_classes: set[str] = set()
    for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal_classes.update([names] if isinstance(names, str) else names)
    architectures = getattr(config, "architectures", None) or []
    if architectures:  # the class the weights were saved from says it best
        return any(a in causal_classes or a.endswith("ForCausalLM") for a in architectures)
    if getattr(config, "is_decoder", False):
        return True
    kind = getattr(config, "model_type", "")
    # BERT-likes have a causal head too (BertLMHeadModel): masked LMs are encoders
    return (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def read_config(model: str, source: str, revision: str | None) -> Any:
    """The transformers config of a folder or hub id; one-line errors saying what to do."""
    local = os.path.isdir(source)
    if local and not (Path(source) / "config.json").is_file():
        raise ModelError(
            f"model '{model}': {source} is not a transformers model folder (no config.json); "
            "write one with model.save_pretrained(PATH) and tokenizer.save_pretrained(PATH)"
        )
    if not local:
        ok, why = weights_availability(model, source, revision)
        if not ok:
            raise ModelError(f"model '{model}': {why}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, revision=None if local else revision)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise ModelError(
                f"model '{model}': it needs code from its repository (trust_remote_code), which "
                "models by name never run; register it in a plugin with trust_remote_code=True"
            ) from None
        if local:
            raise ModelError(
                f"model '{model}': cannot read {source}/config.json: {first_line(exc)}"
            ) from None
        if cached_commit(source, revision) is None and (offline() or not reachable()):
            raise hub_error(model, source, exc) from None
        raise ModelError(
            f"model '{model}': '{source}' is not a model on the Hugging Face hub or that "
            f"revision does not exist ({first_line(exc)}); check the id on huggingface.co"
        ) from None


def hub_folder(repo: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of a hub repository, if it is cached."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "config.json", cache_dir=hub_cache(), revision=revision)
    return Path(found).parent if isinstance(found, str) else None


class UnreachableHubModel(HFLanguageAdapter):
    """A hub model by name that is neither cached nor downloadable here: whether it is a
    causal LM or an encoder is in the config.json it cannot read, so it stays unavailable
    (a run skips it with the reason, as it skips a registered hub model that is not cached)."""

    def __init__(self, spec: str, source: str, revision: str | None, why: str) -> None:
        super().__init__(spec, source=source, revision=revision, tags=("by-name",))
        self.metadata.source = f"huggingface:{source}"
        self.why = why

    def availability(self) -> tuple[bool, str]:
        return False, self.why

    def load(self, device: str = "cpu", dtype: Any = None) -> Any:
        raise ModelError(f"model '{self.id}': {self.why}")


class HFPrefix(ModelPrefix):
    id = "hf:"
    syntax = "hf:ORG/NAME[@REVISION] | hf:PATH"
    summary = "any transformers language model (causal LM or encoder, from its config.json)"

    def open(self, argument: str, **options: Any) -> list[ModelAdapter]:
        options = typed_options(f"hf:{argument}", options)
        if os.path.isdir(argument):
            source, revision = str(Path(argument).resolve()), None
            folder: Path | None = Path(source)
        else:
            source, _, rev = argument.partition("@")
            revision = rev or None
            if looks_like_path(source):
                raise ModelError(
                    f"model 'hf:{argument}': there is no folder {source}; hf:PATH names the "
                    "folder that holds config.json (model.save_pretrained(PATH) writes one)"
                )
            folder = None
        spec = model_spec("hf:", source + (f"@{revision}" if revision else ""), options)
        if folder is None:
            ok, why = weights_availability(spec, source, revision)
            if not ok:  # as timm: and open_clip: names: listed, then skipped saying why
                return [UnreachableHubModel(spec, source, revision, why)]
        config = read_config(spec, source, revision)
        if getattr(config, "is_encoder_decoder", False):
            raise ModelError(
                f"model '{spec}': encoder-decoder models ({config.model_type}) are not supported "
                "by hf:; only causal LMs and encoders are"
            )
        causal = is_causal(config)
        folder = folder or hub_folder(source, revision)
        adapter = HFLanguageAdapter(
            spec,
            causal=causal,
            source=source,
            revision=revision,
            parameters=safetensors_parameters(folder.glob("*.safetensors")) if folder else None,
            tags=("by-name", "causal-lm" if causal else "encoder"),
            url=None if os.path.isdir(source) else f"https://huggingface.co/{source}",
        )
        what = (getattr(config, "architectures", None) or [config.model_type])[0]
        return [
            by_name(
                adapter,
                options,
                source=source if os.path.isdir(source) else f"huggingface:{source}",
                notes=f"{what}, a {'causal LM' if causal else 'encoder'} by its config.json",
            )
        ]


# --------------------------------------------------------------------------- timm:


def timm_kind(name: str) -> str:
    """ "vit" (CLS token of every block) for timm's token transformers, else "cnn" (stages)."""
    from timm.models import get_arch_name, is_model_in_modules

    return "vit" if is_model_in_modules(get_arch_name(name), list(VIT_MODULES)) else "cnn"


class TimmFolderAdapter(TimmVisionAdapter):
    """A timm model saved to a folder (``save_for_hf``): its config.json names the architecture,
    its arguments and its preprocessing; timm loads it as ``local-dir:FOLDER``."""

    def __init__(self, folder: Path, config: dict[str, Any], *, kind: str, id: str) -> None:
        super().__init__(f"local-dir:{folder}", kind=kind, id=id)
        self.folder, self.config = folder, config
        self.metadata.url = None

    def _pretrained_cfg(self) -> dict[str, Any]:
        return dict(self.config.get("pretrained_cfg") or {})

    def weights_revision(self) -> str:
        return directory_fingerprint(self.folder)

    def hub_repo(self) -> str | None:
        return None

    def availability(self) -> tuple[bool, str]:
        ok = (self.folder / "config.json").is_file()
        return ok, "" if ok else f"{self.folder}/config.json is missing"


def read_timm_folder(model: str, folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
        if not isinstance(config.get("architecture"), str):
            raise ValueError("it names no 'architecture'")
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model '{model}': {folder} is not a timm model folder ({first_line(exc)}); "
            "write one with timm.models.save_for_hf(model, PATH, safe_serialization=True)"
        ) from None
    return config


class TimmPrefix(ModelPrefix):
    id = "timm:"
    syntax = "timm:NAME | timm:FOLDER | timm:NAME?checkpoint=FILE"
    summary = "any timm vision model: hub weights, a save_for_hf folder or a weights file"

    def open(self, argument: str, **options: Any) -> list[ModelAdapter]:
        options = typed_options(f"timm:{argument}", options)
        checkpoint = options.pop("checkpoint", None)
        if os.path.isdir(argument):
            if checkpoint is not None:
                raise InvalidInputError(
                    f"model 'timm:{argument}': ?checkpoint=FILE goes with timm:NAME (the "
                    "architecture); a folder holds its own weights"
                )
            adapter, files, source = self.open_folder(Path(argument).resolve(), options)
        else:
            adapter, files, source = self.open_name(argument, checkpoint, options)
        adapter.metadata.parameters = safetensors_parameters(files)
        adapter.tags = ("by-name", adapter.kind)
        rule = "CLS token of every block" if adapter.kind == "vit" else "mean of every stage"
        return [by_name(adapter, options, source=source, notes=f"timm {adapter.kind}: {rule}")]

    def open_folder(self, folder: Path, options: dict[str, Any]) -> tuple[Any, Any, str]:
        """A folder that timm.models.save_for_hf wrote: (adapter, weight files, source)."""
        import timm

        spec = model_spec("timm:", str(folder), options)
        config = read_timm_folder(spec, folder)
        arch = config["architecture"]
        if not timm.is_model(arch):
            raise ModelError(f"model '{spec}': timm {timm.__version__} has no model '{arch}'")
        adapter = TimmFolderAdapter(folder, config, kind=timm_kind(arch), id=spec)
        return adapter, folder.glob("*.safetensors"), str(folder)

    def open_name(
        self, name: str, checkpoint: str | None, options: dict[str, Any]
    ) -> tuple[Any, Any, str]:
        """A timm model name, with its hub weights or a checkpoint file."""
        import timm

        if looks_like_path(name):
            raise ModelError(
                f"model 'timm:{name}': there is no folder {name}; timm:FOLDER names a folder "
                "that timm.models.save_for_hf wrote, timm:NAME a timm model name"
            )
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(pretrained=True), 3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ModelError(
                f"model 'timm:{name}': timm {timm.__version__} has no model '{name}'{hint}; "
                "timm.list_models('*vit*', pretrained=True) lists them"
            )
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise ModelError(f"model 'timm:{name}': checkpoint {checkpoint} is not a file")
            checkpoint = str(Path(checkpoint).resolve())
        weights = {"checkpoint": checkpoint} if checkpoint else {}
        spec = model_spec("timm:", name, {**options, **weights})
        adapter = TimmVisionAdapter(name, kind=timm_kind(name), checkpoint=checkpoint, id=spec)
        if checkpoint:
            adapter.metadata.url = None
            return adapter, [checkpoint], checkpoint
        hub = adapter.hub_repo()
        if hub is None:
            raise ModelError(
                f"model '{spec}': timm has no hub weights for '{name}'; name a pretrained tag "
                "(timm.list_pretrained) or give ?checkpoint=FILE"
            )
        return adapter, [], f"huggingface:{hub}"


# --------------------------------------------------------------------------- open_clip:


class OpenClipPrefix(ModelPrefix):
    id = "open_clip:"
    syntax = "open_clip:ARCH/PRETRAINED[/image|/text]"
    summary = "an open_clip model's image and text towers (PRETRAINED: a tag or a file)"

    def open(self, argument: str, **options: Any) -> list[ModelAdapter]:
        import open_clip

        options = typed_options(f"open_clip:{argument}", options)
        arch, _, rest = argument.partition("/")
        head, _, last = rest.rpartition("/")
        towers = (last,) if head and last in ("image", "text") else ("image", "text")
        pretrained = head if len(towers) == 1 else rest
        if not arch or not pretrained:
            raise InvalidInputError(
                f"model 'open_clip:{argument}': write {self.syntax}, e.g. "
                "open_clip:ViT-B-32/laion2b_s34b_b79k"
            )
        if arch not in open_clip.list_models():
            close = difflib.get_close_matches(arch, open_clip.list_models(), 3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ModelError(
                f"model 'open_clip:{argument}': open_clip has no architecture '{arch}'{hint}; "
                "open_clip.list_models() lists them"
            )
        hub = None
        if os.path.isfile(pretrained):
            pretrained = str(Path(pretrained).resolve())
            source = pretrained
        elif pretrained in open_clip.list_pretrained_tags_by_model(arch):
            hub = open_clip.get_pretrained_cfg(arch, pretrained).get("hf_hub", "").strip("/")
            hub = hub or None
            source = f"huggingface:{hub}" if hub else f"open_clip:{arch}/{pretrained}"
        else:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise ModelError(
                f"model 'open_clip:{argument}': '{pretrained}' is neither a file nor a pretrained "
                f"tag of {arch} (its tags: {tags})"
            )
        out = []
        for tower in towers:
            spec = model_spec("open_clip:", f"{arch}/{pretrained}/{tower}", options)
            adapter = OpenClipAdapter(arch, pretrained, tower, id=spec, tags=("by-name", "clip"))
            adapter.hub_repo = hub
            notes = f"the {tower} tower of open_clip {arch}"
            out.append(by_name(adapter, options, source=source, notes=notes))
        return out


# --------------------------------------------------------------------------- gguf:


def gguf_facts(path: Path) -> tuple[str, int | None]:
    """(the quantisation the file's header names, e.g. "MOSTLY_Q4_K_M"; its parameter count),
    read from the header and tensor table only."""
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        field = reader.get_field("general.file_type")
        kind = "(type not stated)"
        if field is not None:
            kind = gguf.LlamaFileType(int(field.parts[field.data[0]][0])).name
        return kind, sum(int(t.n_elements) for t in reader.tensors)
    except Exception:  # noqa: BLE001 - labels only; loading reports a bad file properly
        return "(type not read)", None


class GGUFFileAdapter(GGUFCausalAdapter):
    """A causal LM in a local GGUF file, converted like the offline suite's GGUF models."""

    def __init__(self, id: str, path: Path) -> None:
        quantisation, parameters = gguf_facts(path)
        super().__init__(
            id,
            dist="gguf",
            modules=(),
            parameters=0,
            url="",
            batch_size=32,
            quantisation=f"GGUF {quantisation}",
        )
        self.path = path
        self.metadata.parameters = parameters  # None when the header cannot be read
        self.metadata.url = None
        self.tags = ("by-name", "causal-lm", "gguf")
        self._fingerprint: str | None = None

    def availability(self) -> tuple[bool, str]:
        if not self.path.is_file():
            return False, f"{self.path} is missing"
        return super().availability()

    def weights_revision(self) -> str:
        if self._fingerprint is None:  # the whole file is hashed once per adapter
            self._fingerprint = file_fingerprint(self.path)
        return self._fingerprint

    def gguf_path(self, scratch: Path) -> Path:
        link = scratch / self.path.name
        os.symlink(self.path, link)
        return link


class GGUFPrefix(ModelPrefix):
    id = "gguf:"
    syntax = "gguf:FILE"
    summary = "a causal LM in a local GGUF file (dequantised once into the cache's weights/)"

    def open(self, argument: str, **options: Any) -> list[ModelAdapter]:
        options = typed_options(f"gguf:{argument}", options)
        path = Path(argument).expanduser()
        if not path.is_file():
            raise ModelError(
                f"model 'gguf:{argument}': there is no file {argument}; gguf:FILE names a local "
                ".gguf file (hub GGUF files: huggingface-cli download ORG/NAME FILE.gguf)"
            )
        path = path.resolve()
        adapter = GGUFFileAdapter(model_spec("gguf:", str(path), options), path)
        return [by_name(adapter, options, source=str(path), notes="a GGUF causal LM")]


@hookimpl
def register_models(register: Any) -> None:
    for handler in (HFPrefix(), TimmPrefix(), OpenClipPrefix(), GGUFPrefix()):
        register(handler)
