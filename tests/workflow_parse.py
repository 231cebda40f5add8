"""The workflow's rule files read as text, for the static tests (test_workflow_static, test_envs).

A parser of its own, not Snakemake's: the tests check what the files say (a rule's log path, its
conda env), and a test module never imports another test module.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "workflow/rules").glob("*.smk"))
#: A rule or a checkpoint (a rule whose output re-plans the DAG) and its indented body.
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.M)
#: A directive whose value is one plain string on the next line: log, benchmark, conda, script.
STRING_DIRECTIVE = re.compile(r'^    (\w+):\n        "([^"\n]*)",?$', re.M)


def rule_directives() -> dict[str, dict[str, str]]:
    """Each rule and checkpoint in workflow/rules/*.smk -> its directives whose value is one plain
    string (log, benchmark, conda, script), as written in the file."""
    rules = {}
    for path in RULE_FILES:
        for rule in RULE.finditer(path.read_text()):
            rules[rule[1]] = dict(STRING_DIRECTIVE.findall(rule[2]))
    return rules
