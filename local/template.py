"""Read a SAM template the way CloudFormation and the SAM transform would, for a local run.

``template.yaml`` is the single description of the application, so the local run derives everything from it:
parameters (defaults plus overrides), pseudo parameters, conditions, and the intrinsic functions that produce
resource names, ARNs, queue URLs and the functions' environment. Values that AWS would assign at deploy time
(physical names, ARNs, URLs) are assigned deterministically for the local run instead.

Only what a local run needs is modelled; an intrinsic or a reference this module cannot resolve raises
:class:`TemplateError` naming where it occurs, rather than producing a plausible wrong value.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; moto depends on it

ACCOUNT_ID = "123456789012"  # moto's default account, and the one the HealthImaging emulator reports
REGION = "us-east-1"
PARTITION = "aws"


class TemplateError(ValueError):
    """The template cannot be resolved for a local run; the message names the place and the reason."""


class _NoValue:
    """``AWS::NoValue``: removes the property (or list element) it is the value of."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


# ------------------------------------------------------------------------------------------------- YAML


class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A YAML loader that understands CloudFormation's short-form tags (``!Ref``, ``!Sub``, ``!GetAtt`` ...).

    Every tag becomes the JSON form CloudFormation itself uses (``!Sub x`` -> ``{"Fn::Sub": "x"}``), so the
    resolver handles one representation. Timestamps stay strings: CloudFormation does not parse them.
    """


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unsupported YAML node for !{suffix}")
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        # The short form's "Resource.Attribute" splits at the first dot: attributes may contain dots.
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)
# Drop the implicit timestamp resolver: "2010-09-09" must stay the string CloudFormation sees.
CfnLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template (YAML or JSON) into its JSON form.

    Parameters
    ----------
    path
        The template file.

    Returns
    -------
    dict
        The template; short-form tags are expanded (``{"Ref": ...}``, ``{"Fn::Sub": ...}``).

    Raises
    ------
    TemplateError
        When the file is not a mapping with a ``Resources`` section.
    """
    text = Path(path).read_text(encoding="utf-8")
    doc = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader subclass
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources mapping)")
    return cast(dict[str, Any], doc)


# ------------------------------------------------------------------------------------------ resources


@dataclass(frozen=True)
class Resource:
    """One resource of the template whose Condition (if any) holds.

    Attributes
    ----------
    logical_id
        The key in ``Resources``.
    type
        ``AWS::SQS::Queue``, ``AWS::Serverless::Function`` ...
    properties
        Unresolved ``Properties`` (SAM functions: with ``Globals.Function`` merged in).
    physical_id
        The local physical name (bucket, queue, table, topic, function, rule name ...).
    metadata
        Unresolved ``Metadata``.
    """

    logical_id: str
    type: str
    properties: Mapping[str, Any]
    physical_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


_NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Events::Rule": "Name",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Logs::LogGroup": "LogGroupName",
}

_NAME_LIMIT = {
    "AWS::S3::Bucket": 63,
    "AWS::SQS::Queue": 80,
    "AWS::Serverless::Function": 64,
    "AWS::Lambda::Function": 64,
}

_ARN_FORMS = {
    "AWS::S3::Bucket": "arn:{partition}:s3:::{name}",
    "AWS::SQS::Queue": "arn:{partition}:sqs:{region}:{account}:{name}",
    "AWS::SNS::Topic": "arn:{partition}:sns:{region}:{account}:{name}",
    "AWS::DynamoDB::Table": "arn:{partition}:dynamodb:{region}:{account}:table/{name}",
    "AWS::Serverless::SimpleTable": "arn:{partition}:dynamodb:{region}:{account}:table/{name}",
    "AWS::Serverless::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::Lambda::Function": "arn:{partition}:lambda:{region}:{account}:function:{name}",
    "AWS::Serverless::LayerVersion": "arn:{partition}:lambda:{region}:{account}:layer:{name}:1",
    "AWS::Lambda::LayerVersion": "arn:{partition}:lambda:{region}:{account}:layer:{name}:1",
    "AWS::Events::Rule": "arn:{partition}:events:{region}:{account}:rule/{name}",
    "AWS::IAM::Role": "arn:{partition}:iam::{account}:role/{name}",
    "AWS::Logs::LogGroup": "arn:{partition}:logs:{region}:{account}:log-group:{name}:*",
}

_INTRINSIC_KEYS = frozenset({"Ref", "Condition"})


def is_intrinsic(value: Any) -> bool:
    """True for a one-key mapping that is an intrinsic function (``Ref``, ``Fn::*``, ``Condition``)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in _INTRINSIC_KEYS or key.startswith("Fn::")


def merge_globals(global_value: Any, local_value: Any) -> Any:
    """Merge a ``Globals`` value into a resource's, as the SAM transform does.

    Maps merge key by key (recursively), lists are the global items followed by the resource's, and any
    other value, or any intrinsic function, is the resource's own when it has one.

    Parameters
    ----------
    global_value, local_value
        The ``Globals.Function`` value and the function's value of one property.

    Returns
    -------
    Any
        The merged value.
    """
    if is_intrinsic(global_value) or is_intrinsic(local_value):
        return local_value
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = merge_globals(global_value[key], value) if key in global_value else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return [*global_value, *local_value]
    return local_value


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class Template:
    """A template with its parameters bound: conditions evaluated, intrinsics resolvable, names assigned.

    Parameters
    ----------
    doc
        The parsed template (:func:`load_template`).
    parameters
        Overrides of parameter defaults (strings; a list for ``CommaDelimitedList``).
    stack_name
        ``AWS::StackName``; also the prefix of generated physical names.
    base_dir
        Directory that ``CodeUri``/``ContentUri`` are relative to (the template's directory).
    sqs_endpoint
        Base URL queue URLs are formed from (``<endpoint>/<account>/<queue name>``, moto's form).
    region, account_id
        ``AWS::Region`` and ``AWS::AccountId``.

    Raises
    ------
    TemplateError
        For an unknown override, a missing required parameter, or a value outside ``AllowedValues`` /
        ``AllowedPattern``.
    """

    def __init__(
        self,
        doc: Mapping[str, Any],
        parameters: Mapping[str, str | Sequence[str]] | None = None,
        *,
        stack_name: str = "ahi-verify-local",
        base_dir: str | Path = ".",
        sqs_endpoint: str = "http://127.0.0.1",
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        self.doc = doc
        self.stack_name = stack_name
        self.base_dir = Path(base_dir)
        self.sqs_endpoint = sqs_endpoint.rstrip("/")
        self.region = region
        self.account_id = account_id
        self.parameters = self._bind_parameters(parameters or {})
        self._condition_defs: Mapping[str, Any] = doc.get("Conditions") or {}
        self._conditions: dict[str, bool] = {}
        self._evaluating: set[str] = set()
        self._check_rules()
        raw: Mapping[str, Any] = doc["Resources"]
        self.all_resource_ids = frozenset(raw)
        globals_function: Mapping[str, Any] = (doc.get("Globals") or {}).get("Function") or {}
        self.resources: dict[str, Resource] = {}
        for logical_id, body in raw.items():
            if not isinstance(body, dict) or "Type" not in body:
                raise TemplateError(f"Resources.{logical_id}: no Type")
            condition = body.get("Condition")
            if condition is not None and not self.condition(str(condition)):
                continue
            properties: Mapping[str, Any] = body.get("Properties") or {}
            if body["Type"] == "AWS::Serverless::Function":
                properties = merge_globals(dict(globals_function), dict(properties))
            self.resources[logical_id] = Resource(
                logical_id, str(body["Type"]), properties, "", body.get("Metadata") or {}
            )
        # Names may use !Sub with other names, so they are assigned after every resource is known.
        for logical_id, resource in list(self.resources.items()):
            self.resources[logical_id] = Resource(
                logical_id, resource.type, resource.properties, self._physical_name(resource), resource.metadata
            )

    # ------------------------------------------------------------------------------------- parameters

    def _bind_parameters(self, overrides: Mapping[str, str | Sequence[str]]) -> dict[str, Any]:
        declared: Mapping[str, Any] = self.doc.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown parameter override(s): {', '.join(sorted(unknown))}")
        bound: dict[str, Any] = {}
        for name, declared_spec in declared.items():
            spec = declared_spec or {}
            if name in overrides:
                value: Any = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no Default: pass a value for it")
            kind = str(spec.get("Type", "String"))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                items = value if isinstance(value, list) else ([] if value == "" else str(value).split(","))
                bound[name] = [str(item).strip() for item in items]
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            text = str(value)
            allowed = spec.get("AllowedValues")
            if allowed is not None and text not in [str(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={text!r} is not one of {allowed}")
            pattern = spec.get("AllowedPattern")
            if pattern is not None and not re.fullmatch(str(pattern), text):
                raise TemplateError(f"parameter {name}={text!r} does not match AllowedPattern {pattern}")
            if kind == "Number":
                self._check_number(name, text, spec)
            if "MinLength" in spec and len(text) < int(spec["MinLength"]):
                raise TemplateError(f"parameter {name}={text!r} is shorter than MinLength {spec['MinLength']}")
            if "MaxLength" in spec and len(text) > int(spec["MaxLength"]):
                raise TemplateError(f"parameter {name}={text!r} is longer than MaxLength {spec['MaxLength']}")
            bound[name] = text
        return bound

    @staticmethod
    def _check_number(name: str, text: str, spec: Mapping[str, Any]) -> None:
        try:
            number = float(text)
        except ValueError:
            raise TemplateError(f"parameter {name}={text!r} is not a Number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise TemplateError(f"parameter {name}={text} is below MinValue {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise TemplateError(f"parameter {name}={text} is above MaxValue {spec['MaxValue']}")

    def _check_rules(self) -> None:
        """Evaluate the template's ``Rules`` (parameter assertions), as CloudFormation does before deploying."""
        for name, rule in (self.doc.get("Rules") or {}).items():
            where = f"Rules.{name}"
            condition = rule.get("RuleCondition")
            if condition is not None and not self._bool(condition, where):
                continue
            for i, assertion in enumerate(rule.get("Assertions") or []):
                if not self._bool(assertion["Assert"], f"{where}.Assertions[{i}]"):
                    reason = assertion.get("AssertDescription", "assertion failed")
                    raise TemplateError(f"{where}: {reason}")

    # ------------------------------------------------------------------------------------- conditions

    def condition(self, name: str) -> bool:
        """Evaluate a named condition (cached).

        Raises
        ------
        TemplateError
            For an undefined or circular condition.
        """
        if name in self._conditions:
            return self._conditions[name]
        if name not in self._condition_defs:
            raise TemplateError(f"condition {name} is not defined")
        if name in self._evaluating:
            raise TemplateError(f"condition {name} refers to itself")
        self._evaluating.add(name)
        try:
            value = self.resolve(self._condition_defs[name], where=f"Conditions.{name}")
        finally:
            self._evaluating.discard(name)
        if not isinstance(value, bool):
            raise TemplateError(f"condition {name} does not evaluate to a boolean")
        self._conditions[name] = value
        return value

    # -------------------------------------------------------------------------------------- naming

    def _physical_name(self, resource: Resource) -> str:
        prop = _NAME_PROPERTY.get(resource.type)
        if prop and prop in resource.properties:
            name = self.resolve(resource.properties[prop], where=f"{resource.logical_id}.{prop}")
            if name is not NO_VALUE and name not in ("", None):
                return str(name)
        # CloudFormation names unnamed resources <stack>-<logical id>-<random>; the local run drops the random
        # part so that names are stable between runs and readable in logs.
        name = f"{self.stack_name}-{resource.logical_id}"
        if resource.type == "AWS::S3::Bucket":
            name = re.sub(r"[^a-z0-9.-]", "-", name.lower())
        if resource.type == "AWS::SQS::Queue" and _truthy(resource.properties.get("FifoQueue")):
            return name[: _NAME_LIMIT[resource.type] - len(".fifo")] + ".fifo"
        limit = _NAME_LIMIT.get(resource.type)
        return name if limit is None else name[:limit]

    def resource(self, logical_id: str) -> Resource:
        """Return an active resource.

        Raises
        ------
        TemplateError
            When the template has no such resource, or its Condition is false.
        """
        try:
            return self.resources[logical_id]
        except KeyError:
            if logical_id in self.all_resource_ids:
                raise TemplateError(f"resource {logical_id} is disabled by its Condition") from None
            raise TemplateError(f"resource {logical_id} is not in the template") from None

    def of_type(self, *types: str) -> list[Resource]:
        """Active resources of the given types, in template order."""
        return [r for r in self.resources.values() if r.type in types]

    def arn(self, resource: Resource) -> str:
        """The local ARN of a resource (the form AWS uses for its type)."""
        form = _ARN_FORMS.get(resource.type)
        if form is None:
            service = resource.type.split("::")[1].lower() if resource.type.count("::") >= 2 else "local"
            form = f"arn:{{partition}}:{service}:{{region}}:{{account}}:{{name}}"
        return form.format(partition=PARTITION, region=self.region, account=self.account_id, name=resource.physical_id)

    def queue_url(self, resource: Resource) -> str:
        """The queue URL moto gives a queue of this name (checked against moto when the queue is created)."""
        return f"{self.sqs_endpoint}/{self.account_id}/{resource.physical_id}"

    def ref(self, name: str, *, where: str = "") -> Any:
        """Resolve ``{"Ref": name}``: a parameter, a pseudo parameter, or a resource's Ref value."""
        pseudo = {
            "AWS::AccountId": self.account_id,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:{PARTITION}:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/"
                "00000000-0000-4000-8000-000000000000"
            ),
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        try:
            resource = self.resource(name)
        except TemplateError as exc:
            raise TemplateError(f"{where}: !Ref {name}: {exc}") from None
        if resource.type in ("AWS::SQS::Queue",):
            return self.queue_url(resource)
        if resource.type in (
            "AWS::SNS::Topic",
            "AWS::Serverless::LayerVersion",
            "AWS::Lambda::LayerVersion",
        ):
            return self.arn(resource)
        return resource.physical_id

    def get_att(self, logical_id: str, attribute: str, *, where: str = "") -> Any:
        """Resolve ``{"Fn::GetAtt": [logical_id, attribute]}``.

        Raises
        ------
        TemplateError
            For an unknown resource, or an attribute the local run does not model for that type.
        """
        try:
            resource = self.resource(logical_id)
        except TemplateError as exc:
            raise TemplateError(f"{where}: !GetAtt {logical_id}.{attribute}: {exc}") from None
        name = resource.physical_id
        if attribute == "Arn" or (resource.type == "AWS::SNS::Topic" and attribute == "TopicArn"):
            return self.arn(resource)
        values: dict[str, Any] = {}
        if resource.type == "AWS::SQS::Queue":
            values = {"QueueName": name, "QueueUrl": self.queue_url(resource)}
        elif resource.type == "AWS::SNS::Topic":
            values = {"TopicName": name}
        elif resource.type == "AWS::S3::Bucket":
            values = {
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
                "WebsiteURL": f"http://{name}.s3-website-{self.region}.amazonaws.com",
            }
        elif resource.type in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            values = {"StreamArn": f"{self.arn(resource)}/stream/1970-01-01T00:00:00.000"}
        elif resource.type == "AWS::IAM::Role":
            values = {"RoleId": f"AROA{name.upper()[:17]}"}
        if attribute in values:
            return values[attribute]
        raise TemplateError(f"{where}: !GetAtt {logical_id}.{attribute} is not modelled for {resource.type}")

    # ------------------------------------------------------------------------------------ resolution

    def resolve(self, value: Any, *, where: str = "template") -> Any:
        """Resolve every intrinsic function in ``value`` to a local value.

        ``AWS::NoValue`` removes the mapping key or list element it is the value of; at the top level it is
        returned as :data:`NO_VALUE`.

        Parameters
        ----------
        value
            Any part of the template.
        where
            A path for error messages (``"ImageSetWorkerFunction.Environment"``).

        Returns
        -------
        Any
            Plain JSON-like data.

        Raises
        ------
        TemplateError
            For an intrinsic this module does not support, or a reference it cannot resolve.
        """
        if isinstance(value, dict):
            if is_intrinsic(value):
                key, arg = next(iter(value.items()))
                return self._intrinsic(key, arg, where)
            out: dict[str, Any] = {}
            for key, item in value.items():
                resolved = self.resolve(item, where=f"{where}.{key}")
                if resolved is not NO_VALUE:
                    out[key] = resolved
            return out
        if isinstance(value, list):
            items = [self.resolve(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def _intrinsic(self, key: str, arg: Any, where: str) -> Any:
        handler = self._handlers().get(key)
        if handler is None:
            raise TemplateError(f"{where}: {key} is not supported by the local run")
        return handler(arg, where)

    def _handlers(self) -> dict[str, Callable[[Any, str], Any]]:
        return {
            "Ref": lambda arg, where: self.ref(str(arg), where=where),
            "Condition": lambda arg, where: self.condition(str(arg)),
            "Fn::GetAtt": self._fn_get_att,
            "Fn::Sub": self._fn_sub,
            "Fn::Join": self._fn_join,
            "Fn::Select": self._fn_select,
            "Fn::Split": self._fn_split,
            "Fn::If": self._fn_if,
            "Fn::Equals": self._fn_equals,
            "Fn::Not": self._fn_not,
            "Fn::And": lambda arg, where: all(self._bool(a, where) for a in self._list(arg, 2, 10, "Fn::And", where)),
            "Fn::Or": lambda arg, where: any(self._bool(a, where) for a in self._list(arg, 2, 10, "Fn::Or", where)),
            "Fn::FindInMap": self._fn_find_in_map,
            # Rule-only functions (Rules.*.Assertions).
            "Fn::Contains": self._fn_contains,
            "Fn::EachMemberEquals": self._fn_each_member_equals,
            "Fn::EachMemberIn": self._fn_each_member_in,
            "Fn::Base64": lambda arg, where: base64.b64encode(str(self.resolve(arg, where=where)).encode()).decode(),
            "Fn::GetAZs": lambda arg, where: [f"{self.region}{z}" for z in "abc"],
            "Fn::ToJsonString": lambda arg, where: json.dumps(self.resolve(arg, where=where), separators=(",", ":")),
            "Fn::Length": lambda arg, where: len(
                self._list(self.resolve(arg, where=where), 0, 10**6, "Fn::Length", where)
            ),
        }

    @staticmethod
    def _list(arg: Any, low: int, high: int, fn: str, where: str) -> list[Any]:
        if not isinstance(arg, list) or not low <= len(arg) <= high:
            raise TemplateError(f"{where}: {fn} takes a list of {low}..{high} items, got {arg!r}")
        return arg

    def _bool(self, arg: Any, where: str) -> bool:
        value = self.resolve(arg, where=where)
        if not isinstance(value, bool):
            raise TemplateError(f"{where}: a condition function needs a boolean, got {value!r}")
        return value

    def _fn_get_att(self, arg: Any, where: str) -> Any:
        if isinstance(arg, str):
            logical_id, _, attribute = arg.partition(".")
        else:
            logical_id, attribute = (self.resolve(a, where=where) for a in self._list(arg, 2, 2, "Fn::GetAtt", where))
        return self.get_att(str(logical_id), str(attribute), where=where)

    def _fn_sub(self, arg: Any, where: str) -> str:
        variables: dict[str, Any] = {}
        if isinstance(arg, list):
            text, raw_vars = self._list(arg, 2, 2, "Fn::Sub", where)
            variables = {k: self.resolve(v, where=f"{where}.{k}") for k, v in dict(raw_vars).items()}
        else:
            text = arg
        if not isinstance(text, str):
            raise TemplateError(f"{where}: Fn::Sub needs a string, got {text!r}")

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} is the escape for a literal ${Literal}
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                logical_id, _, attribute = name.partition(".")
                value = self.get_att(logical_id, attribute, where=where)
            else:
                value = self.ref(name, where=where)
            if isinstance(value, list | dict) or value is NO_VALUE:
                raise TemplateError(f"{where}: Fn::Sub variable {name} is not a string")
            return str(value)

        return _SUB_VARIABLE.sub(substitute, text)

    def _fn_join(self, arg: Any, where: str) -> str:
        delimiter, items = self._list(arg, 2, 2, "Fn::Join", where)
        values = self.resolve(items, where=where)
        if not isinstance(values, list):
            raise TemplateError(f"{where}: Fn::Join needs a list")
        return str(delimiter).join(str(v) for v in values)

    def _fn_select(self, arg: Any, where: str) -> Any:
        index, items = self._list(arg, 2, 2, "Fn::Select", where)
        values = self.resolve(items, where=where)
        position = int(self.resolve(index, where=where))
        if not isinstance(values, list) or not 0 <= position < len(values):
            raise TemplateError(f"{where}: Fn::Select index {position} is out of range")
        return values[position]

    def _fn_split(self, arg: Any, where: str) -> list[str]:
        delimiter, text = self._list(arg, 2, 2, "Fn::Split", where)
        return str(self.resolve(text, where=where)).split(str(delimiter))

    def _fn_if(self, arg: Any, where: str) -> Any:
        name, if_true, if_false = self._list(arg, 3, 3, "Fn::If", where)
        return self.resolve(if_true if self.condition(str(name)) else if_false, where=where)

    def _fn_equals(self, arg: Any, where: str) -> bool:
        left, right = (self.resolve(a, where=where) for a in self._list(arg, 2, 2, "Fn::Equals", where))
        # CloudFormation compares the values as written: 5 and "5" are equal, lists compare item by item.
        return bool(_canonical(left) == _canonical(right))

    def _fn_not(self, arg: Any, where: str) -> bool:
        (inner,) = self._list(arg, 1, 1, "Fn::Not", where)
        return not self._bool(inner, where)

    def _fn_contains(self, arg: Any, where: str) -> bool:
        values, value = (self.resolve(a, where=where) for a in self._list(arg, 2, 2, "Fn::Contains", where))
        return _canonical(value) in [_canonical(v) for v in values]

    def _fn_each_member_equals(self, arg: Any, where: str) -> bool:
        values, value = (self.resolve(a, where=where) for a in self._list(arg, 2, 2, "Fn::EachMemberEquals", where))
        return all(_canonical(v) == _canonical(value) for v in values)

    def _fn_each_member_in(self, arg: Any, where: str) -> bool:
        values, allowed = (self.resolve(a, where=where) for a in self._list(arg, 2, 2, "Fn::EachMemberIn", where))
        canonical = [_canonical(a) for a in allowed]
        return all(_canonical(v) in canonical for v in values)

    def _fn_find_in_map(self, arg: Any, where: str) -> Any:
        name, top, second = (self.resolve(a, where=where) for a in self._list(arg, 3, 3, "Fn::FindInMap", where))
        try:
            return self.doc["Mappings"][name][top][second]
        except (KeyError, TypeError):
            raise TemplateError(f"{where}: Fn::FindInMap {name}.{top}.{second} is not in Mappings") from None


def _canonical(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
