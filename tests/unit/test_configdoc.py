"""The generated configuration reference matches the schema (and how it is generated)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
import pytest

from shared import cli
from shared.config import EnvConfig, load_env
from shared.ops import configdoc
from shared.ops.confignotes import ENV_NOTES, NOTES, SECTION_NOTES


def test_docs_configuration_md_is_up_to_date_with_the_schema():
    current = configdoc.DOC_PATH.read_text() if configdoc.DOC_PATH.exists() else ""
    assert current == configdoc.render(), (
        "docs/configuration.md is out of date with shared/config.py (or an environment variable "
        "read under shared/ or services/): run `.venv/bin/scalper docs config` and commit it"
    )


def test_every_note_names_a_key_or_section_the_schema_has():
    paths = configdoc.schema_paths()
    assert sorted(set(NOTES) - paths) == []
    assert sorted(set(SECTION_NOTES) - {p for p, _ in configdoc.sections()}) == []


def test_every_key_and_variable_of_the_reference_has_a_description():
    page = configdoc.render()
    rows = [ln for ln in page.splitlines() if ln.startswith("| `")]
    assert len(rows) > 120
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]] for ln in rows]
    empty = [c[0] for c in cells if not c[-1]]
    assert empty == [], "describe these in shared/config.py or shared/ops/confignotes.py"


def test_every_key_path_of_the_schema_is_in_the_reference():
    page = configdoc.render()
    missing = [p for p in configdoc.schema_paths() if f"| `{p}` |" not in page]
    assert missing == []
    assert "| `signals.validation_modes.<name>.theta_cutoff_hhmm` | string | **required** |" in page


def test_constraints_choices_and_defaults_come_from_the_schema():
    page = configdoc.render()
    assert "| `risk.sl_pct` | float | `0.3` | ≥ 0, ≤ 1 |" in page
    assert '| `risk.trailing_mode` | one of "off", "direct", "tiered" | `"off"` |' in page
    assert '| `risk.time_exit_hhmm` | string | `"15:20"` | HH:MM, 00:00–23:59 |' in page
    assert "| `signals.supertrend.multiplier` | float | `2.0` | > 0, ≤ 10 |" in page
    assert "| `indices` | list of mapping | **required** |" in page
    # a long default is shown as YAML below its table
    assert "Default of `capital.bands`:" in page and "- upto_rupees: 75000" in page


def test_cross_key_rules_are_read_from_check_semantics():
    rules = configdoc.semantic_rules()
    assert "$.signals.ema.fast: must be below slow (<signals.ema.slow>)" in rules
    assert "$.indices[<i>].key: duplicate index <key>" in rules
    assert "- `$.capital.bands`: the last band must have upto_rupees: null" in configdoc.render()


# ----------------------------------------------------------------------------- environment


def sample(name: str) -> str:
    return {
        "SCALPER_MODE": "live",
        "SCALPER_LOG_LEVEL": "DEBUG",
        "SCALPER_DB_SCHEMA": "docs_x",
    }.get(name, "docs-x")


def test_each_load_env_variable_is_mapped_to_the_envconfig_field_it_sets():
    found = configdoc.load_env_vars()
    assert {v.name for v in found} >= {"SCALPER_MODE", "DHAN_ACCESS_TOKEN", "DATABASE_URL"}
    base = load_env({})
    for v in found:
        bool_field = isinstance(
            getattr(base, v.field if v.field != "token" else "access_token"), bool
        )
        env = load_env({v.name: "true" if bool_field else sample(v.name)})
        attr = "access_token" if v.field == "token" else v.field
        assert getattr(env, attr) != getattr(base, attr), v.name
    fields = {f.name.lstrip("_") for f in msgspec.structs.fields(EnvConfig)}
    assert {v.field for v in found} == fields


def test_env_defaults_and_validation_come_from_load_env():
    by_name = {v.name: v for v in configdoc.load_env_vars()}
    assert by_name["SCALPER_MODE"].default == '`"paper"`'
    assert by_name["SCALPER_NAMESPACE"].default == "the value of `SCALPER_MODE`"
    assert "expected 'paper' or 'live', got <mode>" in by_name["SCALPER_MODE"].checks
    assert by_name["SCALPER_ORDERS_ENABLED"].checks[0].startswith("true: 1/on/true/yes")
    assert all(v.name in ENV_NOTES for v in by_name.values())


def test_other_environment_reads_are_found_with_their_files_and_defaults(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "services" / "x").mkdir(parents=True)
    (tmp_path / "shared" / "a.py").write_text(
        'import os\nA = os.environ.get("SCALPER_FOO_S", "5")\nB = os.getenv("DHAN_BAR")\n'
    )
    (tmp_path / "services" / "x" / "b.py").write_text(
        'def f(e):\n    e["SCALPER_QUX"] = 1\n    return e["SCALPER_FOO_S"], e.get("NOT_OURS")\n'
    )
    found = {v.name: v for v in configdoc.other_env_vars(tmp_path)}
    assert set(found) == {"SCALPER_FOO_S", "DHAN_BAR"}  # a write is not a read
    assert found["SCALPER_FOO_S"].read_in == ("services/x/b.py", "shared/a.py")
    assert found["SCALPER_FOO_S"].default == '`"5"`'


# ----------------------------------------------------------------------------- descriptions


class _Demo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A demo section."""

    level: Annotated[int, msgspec.Meta(ge=1, le=5, description="From Meta.")] = 3
    colour: Literal["red", "blue"] = "red"
    """From the attribute docstring."""
    names: list[Annotated[str, msgspec.Meta(min_length=2)]] = msgspec.field(
        default_factory=list
    )  # a comment
    ratio: float | None = None
    needed: bool


def test_descriptions_come_from_meta_docstrings_and_comments_before_notes():
    lines = configdoc.section_markdown("demo", _Demo, notes={"demo.ratio": "From the notes."})
    text = "\n".join(lines)
    assert lines[0] == "### `demo`" and "A demo section." in text
    assert "| `demo.level` | int | `3` | ≥ 1, ≤ 5 | From Meta. |" in text
    assert (
        '| `demo.colour` | one of "red", "blue" | `"red"` |  | From the attribute docstring. |'
        in text
    )
    assert "| `demo.names` | list of string | `[]` | each length ≥ 2 | a comment |" in text
    assert "| `demo.ratio` | float or null | `null` |  | From the notes. |" in text
    assert "| `demo.needed` | bool | **required** |  |  |" in text


def test_field_docs_reads_attribute_docstrings_and_trailing_comments():
    assert configdoc.field_docs(_Demo) == {
        "colour": "From the attribute docstring.",
        "names": "a comment",
    }


@pytest.mark.parametrize(
    ("tp", "text", "constraints"),
    [
        (Annotated[float, msgspec.Meta(gt=0.0)] | None, "float or null", ("> 0",)),
        (
            dict[str, Annotated[int, msgspec.Meta(ge=1)]],
            "map of string to int",
            ("each value ≥ 1",),
        ),
        (list[Literal[1, 5]], "list of one of 1, 5", ()),
        (Annotated[str, msgspec.Meta(pattern="^a+$")], "string", ("matches `^a+$`",)),
    ],
)
def test_type_info_reads_annotations(tp, text, constraints):
    info = configdoc.type_info(tp)
    assert (info.text, info.constraints) == (text, constraints)


def test_pipes_in_cells_are_escaped():
    assert configdoc._cell("a | b\n c") == "a \\| b c"


# ----------------------------------------------------------------------------- the command


def test_scalper_docs_config_writes_the_file_and_check_detects_a_stale_one(tmp_path, capsys):
    out = tmp_path / "configuration.md"
    out.write_text("stale\n")
    assert cli.main(["docs", "config", "--check", "--out", str(out)]) == 1
    assert cli.main(["docs", "config", "--out", str(out)]) == 0
    assert cli.main(["docs", "config", "--check", "--out", str(out)]) == 0
    assert out.read_text() == configdoc.render()
    assert re.search(r"is up to date", capsys.readouterr().out)
