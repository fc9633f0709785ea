#!/usr/bin/env python3
"""Writes deploy/k8s/components/monitoring/prometheusrule.yaml from
deploy/prometheus/alerts.yml, so that the Prometheus Operator and the compose
stack's Prometheus load the same rules. scripts/check-deploy.sh fails when the
two differ; rerun this after editing alerts.yml:

    python3 scripts/gen-prometheus-rule.py          # rewrite the file
    python3 scripts/gen-prometheus-rule.py --check  # exit 1 if it is stale
"""
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "deploy/prometheus/alerts.yml"
TARGET = ROOT / "deploy/k8s/components/monitoring/prometheusrule.yaml"
HEADER = """\
# Generated from deploy/prometheus/alerts.yml by scripts/gen-prometheus-rule.py:
# edit alerts.yml, then rerun the script (scripts/check-deploy.sh checks that
# the two agree). The comments explaining each rule live in alerts.yml.
"""


class Literal(str):
    pass


def literal(dumper, value):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


yaml.add_representer(Literal, literal, Dumper=yaml.SafeDumper)


def multiline(node):
    if isinstance(node, dict):
        return {k: multiline(v) for k, v in node.items()}
    if isinstance(node, list):
        return [multiline(v) for v in node]
    if isinstance(node, str) and "\n" in node:
        return Literal(node)
    return node


def render():
    groups = yaml.safe_load(SOURCE.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "highload",
            "labels": {"app.kubernetes.io/name": "highload"},
        },
        "spec": {"groups": multiline(groups)},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=100)


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not TARGET.exists() or TARGET.read_text() != text:
            sys.exit(f"{TARGET.relative_to(ROOT)} is stale: run scripts/gen-prometheus-rule.py")
        return
    TARGET.write_text(text)


if __name__ == "__main__":
    main()
