"""The command line: listings, JSON, one-line errors, help everywhere, and no heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

import prh_bench
from prh_bench.cli import cli

HEAVY = ("torch", "transformers", "timm", "open_clip")


def test_version(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"prh-bench, version {prh_bench.__version__}"


def test_plugins_json_lists_builtins_with_versions(fresh_plugins, run_cli):
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["knn_torch"]["hooks"] == ["knn_backend"]
    assert rows["knn_metrics"]["version"] == prh_bench.__version__
    assert rows["kernel_metrics"]["distribution"] == "prh-bench"


def test_plugins_table(fresh_plugins, run_cli):
    result = run_cli("plugins")
    assert result.exit_code == 0
    assert "knn_metrics" in result.output and "register_metrics" in result.output


def test_metrics_listing(fresh_plugins, run_cli):
    rows = json.loads(run_cli("metrics", "--json").output)
    names = {r["name"] for r in rows}
    assert {
        "mutual_knn",
        "cycle_knn",
        "lcs_knn",
        "edit_distance_knn",
        "cka",
        "unbiased_cka",
        "cknna",
        "svcca",
    } <= names
    assert next(r for r in rows if r["name"] == "mutual_knn")["parameters"] == {"topk": 10}
    assert "mutual_knn" in run_cli("metrics").output


def test_models_listing_filters_by_modality(fresh_plugins, run_cli):
    rows = json.loads(run_cli("models", "--json").output)
    vision = json.loads(run_cli("models", "--modality", "vision", "--json").output)
    assert all(r["modality"] == "vision" for r in vision)
    assert len(vision) <= len(rows)
    assert run_cli("models", "--modality", "vision").exit_code == 0


def test_models_rejects_bad_modality(run_cli):
    result = run_cli("models", "--modality", "audio")
    assert result.exit_code == 2 and "Invalid value for '--modality'" in result.output


def test_unknown_dataset_is_one_line(fresh_plugins, run_cli):
    result = run_cli("datasets", "show", "openclipart-102")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: unknown dataset 'openclipart-102'. Did you mean: ")
    assert "Traceback" not in result.output


def test_unknown_model_through_the_real_binary(tmp_path):
    code = (
        "import sys; from prh_bench.cli import main; sys.argv=['prh-bench','datasets','show',"
        "'no-such-dataset']; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "Error: unknown dataset 'no-such-dataset'. Run 'prh-bench datasets' to list them."
    )


def _all_commands(group: click.Group, prefix: str = ""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _all_commands(command, f"{prefix}{name} ")


def test_every_command_and_option_has_help():
    for name, command in _all_commands(cli):
        assert command.help, f"'{name}' has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"option {param.opts} of '{name}' has no help text"


@pytest.mark.parametrize(
    "args", [["--help"], ["plugins"], ["models"], ["metrics"], ["datasets"], ["models", "--json"]]
)
def test_help_and_listings_import_no_heavy_library(args):
    code = (
        "import sys; from click.testing import CliRunner; from prh_bench.cli import cli;"
        f"r = CliRunner().invoke(cli, {args!r}); assert r.exit_code == 0, r.output;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{args} imported {out.stdout.strip()}"


def test_help_importtime_has_no_torch():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "prh_bench", "--help"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}
    assert "Usage: prh-bench" in out.stdout
