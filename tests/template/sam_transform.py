"""Run the SAM translator on a template, offline, and print the CloudFormation it produces as JSON.

Executed with the SAM CLI's own interpreter (.venv-sam/bin/python), which has `samtranslator`; the dev venv
does not. No AWS call is made: the managed-policy loader is a fake (the template names no managed policy by
name; SAM adds its own by ARN), and the region comes from the environment. Local CodeUri/ContentUri folders
become placeholder S3 URIs first, as `sam validate` does (the translator accepts only S3 locations).

    .venv-sam/bin/python tests/template/sam_transform.py template.yaml '{"DatastoreId": "..."}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

LOCAL_URI_PROPERTIES = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}


class NoManagedPolicies:
    """Stands in for samtranslator's IAM-backed ManagedPolicyLoader."""

    def load(self) -> dict[str, str]:
        return {}


def main() -> None:
    template = yaml_parse(Path(sys.argv[1]).read_text(encoding="utf-8"))
    parameters = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    for resource in template.get("Resources", {}).values():
        key = LOCAL_URI_PROPERTIES.get(resource.get("Type", ""))
        uri = resource.get("Properties", {}).get(key)
        if isinstance(uri, str) and not uri.startswith("s3://"):
            resource["Properties"][key] = f"s3://local-build/{uri.strip('/')}"
    transformed = transform(template, parameters, NoManagedPolicies())  # type: ignore[arg-type]  # duck-typed loader
    json.dump(transformed, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
