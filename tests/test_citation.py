"""CITATION.cff is valid Citation File Format 1.2.0 and names the paper, its author and the
upstream code, as the README's "Citing" section does.

cffconvert cannot be locked beside moto[server] (cffconvert 2.0, the only release that reads
CFF 1.2.0, needs jsonschema<4; moto's server extra needs openapi-spec-validator>=0.5, which
needs jsonschema>=4), so the file is validated the way `cffconvert --validate` does it: against
the CFF 1.2.0 JSON schema (tests/data/cff-1.2.0.schema.json, from citation-file-format 1.2.0 as
cffconvert 2.0.0 ships it; CC-BY-4.0) with jsonschema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).with_name("data") / "cff-1.2.0.schema.json"
PAPER = "Beyond Pruning and Dropout: Evolving Robust Networks via Persistent Stochastic Ablation"
UPSTREAM = {
    "https://github.com/tcotten-scrypted/persistent-stochastic-ablation-mlp",
    "https://github.com/tcotten-scrypted/persistent-stochastic-ablation-resmlp",
}


def citation() -> dict:
    loaded = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    # CFF dates are strings in the schema; YAML reads an unquoted one as a date.
    return json.loads(json.dumps(loaded, default=str))


def citing_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Citing\n", 1)[1].split("\n## ", 1)[0]


def test_citation_file_is_valid_cff_1_2_0():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(citation())]
    assert errors == []


def test_the_schema_refuses_a_citation_without_authors():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    without_authors = {k: v for k, v in citation().items() if k != "authors"}
    assert not jsonschema.Draft7Validator(schema).is_valid(without_authors)


def test_citation_prefers_the_paper_and_references_the_upstream_code():
    cff = citation()
    paper = cff["preferred-citation"]
    assert paper["title"] == PAPER and paper["year"] == 2025
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [("Tim", "Cotten")]
    assert paper["authors"][0]["affiliation"] == "Scrypted Inc.; George Mason University"
    assert {ref["repository-code"] for ref in cff["references"]} == UPSTREAM
    assert cff["type"] == "software" and cff["version"]


def test_citation_holds_no_placeholder():
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    assert not re.search(r"complete them|not recorded|psa developers|the authors of", text, re.I)


def test_readme_citing_section_names_what_the_citation_file_names():
    section = " ".join(citing_section().split())
    assert f'"{PAPER}" by Tim Cotten (Scrypted Inc.; George Mason University), 2025' in section
    assert all(url in section for url in UPSTREAM)
    assert not re.search(r"not recorded|as their authors publish them", section)
