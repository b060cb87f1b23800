"""The user's `c360.yaml`: pydantic models that validate it and say exactly which key is wrong.

A config is loaded once, with `load_config(path)`, and every relative path in it (source files, the
SQLite warehouse) is resolved against the folder that holds the file, so a project works from any
working directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

CONFIG_ENV_VAR = "C360_CONFIG"
WAREHOUSE_ENV_VAR = "C360_WAREHOUSE"
DEFAULT_CONFIG_NAME = "c360.yaml"
DEFAULT_WAREHOUSE = "sqlite:///.c360/warehouse.db"

# Canonical person fields a source may map. Contact-point fields may take several columns, each of which
# becomes its own contact point; single-valued fields take the first non-empty column.
NAME_FIELDS = ("first_name", "middle_name", "last_name", "full_name", "name_suffix")
ADDRESS_PART_FIELDS = ("address_line1", "address_line2", "city", "region", "postal_code", "country")
PERSON_FIELDS = (*NAME_FIELDS, "birth_date", "gender", "email", "phone", "address", *ADDRESS_PART_FIELDS)
MULTI_VALUED_FIELDS = ("email", "phone", "address")
# Engagement fields with a typed canonical column; any other field name lands in `attributes`.
ENGAGEMENT_TYPED_FIELDS = ("type", "amount", "currency", "channel", "status")


class ConfigError(Exception):
    """A problem with the user's configuration or sources, phrased for the user: file, source, key, what."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """How one canonical field is read from a source row.

    Written in YAML as a column name, a list of columns, or a mapping with exactly one of `column`,
    `columns` or `value`, plus `join` (concatenate the columns) and `format` (date formats, tried in order).
    """

    columns: tuple[str, ...] = ()
    value: str | int | float | bool | None = None
    join: str | None = None
    format: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            return {"columns": (raw,)}
        if isinstance(raw, list):
            return {"columns": tuple(raw)}
        if isinstance(raw, dict):
            raw = dict(raw)
            if "column" in raw:
                if "columns" in raw:
                    raise ValueError("give either 'column' or 'columns', not both")
                raw["columns"] = (raw.pop("column"),)
            if isinstance(raw.get("format"), str):
                raw["format"] = (raw["format"],)
            has_columns, has_value = bool(raw.get("columns")), "value" in raw
            if has_columns == has_value:
                raise ValueError("needs exactly one of 'column', 'columns' or 'value'")
        return raw

    @property
    def is_constant(self) -> bool:
        return not self.columns


def _column_name(raw: Any) -> Any:
    return raw if raw is None or isinstance(raw, str) else str(raw)


ColumnName = Annotated[str, BeforeValidator(_column_name)]


class SourceConfig(_Strict):
    """One system that sends customer data: where its batches are, and how its columns map to the model."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=63)
    kind: Literal["person", "engagement"] = "person"
    format: Literal["csv", "jsonl", "parquet", "sql"] = "csv"
    path: str | None = None
    url: str | None = None
    query: str | None = None
    table: str | None = None
    encoding: str | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    id: ColumnName
    updated_at: FieldSpec | None = None
    default_country: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    identifiers: dict[str, FieldSpec] = Field(default_factory=dict)
    # engagement sources only
    of: str | None = None
    person_id: ColumnName | None = None
    occurred_at: FieldSpec | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> SourceConfig:
        if self.format == "sql":
            if not self.url:
                raise ValueError("a 'sql' source needs 'url'")
            if bool(self.query) == bool(self.table):
                raise ValueError("a 'sql' source needs exactly one of 'query' or 'table'")
        elif not self.path:
            raise ValueError(f"a '{self.format}' source needs 'path' (a file or a glob)")
        if self.kind == "person":
            unknown = sorted(set(self.fields) - set(PERSON_FIELDS))
            if unknown:
                raise ValueError(
                    f"unknown canonical field(s) in 'fields': {', '.join(unknown)}; "
                    f"expected some of: {', '.join(PERSON_FIELDS)}"
                )
            for key in ("of", "person_id", "occurred_at"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' is for engagement sources (kind: engagement)")
        else:
            if not self.of or not self.person_id:
                raise ValueError("an engagement source needs 'of' (its person source) and 'person_id'")
            if self.identifiers:
                raise ValueError("'identifiers' belong on person sources")
        for key, spec in self.identifiers.items():
            if not re.fullmatch(r"[a-z0-9_]+", key):
                raise ValueError(f"identifier type '{key}' must match [a-z0-9_]+")
            if spec.is_constant:
                raise ValueError(f"identifier '{key}' must be read from a column, not a constant value")
        return self

    def mapped_columns(self) -> dict[str, tuple[str, ...]]:
        """Every source column the mapping reads, by the config key that reads it (for error messages)."""
        used: dict[str, tuple[str, ...]] = {"id": (self.id,)}
        if self.person_id:
            used["person_id"] = (self.person_id,)
        for key, spec in (("updated_at", self.updated_at), ("occurred_at", self.occurred_at)):
            if spec is not None and spec.columns:
                used[key] = spec.columns
        for group, specs in (("fields", self.fields), ("identifiers", self.identifiers)):
            for key, spec in specs.items():
                if spec.columns:
                    used[f"{group}.{key}"] = spec.columns
        return used


RULE_FIELDS = ("first_name", "last_name", "birth_date", "email", "phone", "address", "postal_code")


class Criterion(_Strict):
    """One condition of a match rule: a canonical field compared with a method, or a shared identifier."""

    field: Literal["first_name", "last_name", "birth_date", "email", "phone", "address", "postal_code"] | None = None
    method: Literal["exact", "normalized", "fuzzy"] = "normalized"
    threshold: float = Field(default=0.9, gt=0, le=1)
    identifier: str | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> Criterion:
        if (self.field is None) == (self.identifier is None):
            raise ValueError("a criterion needs exactly one of 'field' or 'identifier'")
        if self.method == "fuzzy" and self.field not in ("first_name", "last_name", "address"):
            raise ValueError(f"'fuzzy' works on first_name, last_name and address, not {self.field}")
        return self


class MatchRule(_Strict):
    """Every criterion must hold for the rule to link two records."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    criteria: list[Criterion] = Field(min_length=1)


# Only a shared identifier is a rule by default: everything else is weighed by the model, which knows how many
# records share an email and how much the names agree. A default "same email and name" rule linked namesakes
# whose name-made emails collide (mary.williams@...) where the model put them at 5 to 25 %.
DEFAULT_RULES = [
    MatchRule(name="same_identifier", criteria=[Criterion(identifier="*")]),
]
DEFAULT_JUNK_VALUES = [
    "noemail@example.com", "none@none.com", "na@na.com", "test@test.com", "no@email.com", "noreply@example.com",
    "+10000000000", "+15555555555", "+19999999999", "+11234567890",
]


class MatchConfig(_Strict):
    """How records are linked: deterministic rules, the learned model's threshold, and the guards."""

    rules: list[MatchRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    # Link where the model finds one person more likely than two: the clustering and the guards catch the rest.
    threshold: float = Field(default=0.5, gt=0, lt=1)
    # How tightly a person's records must hang together in dedupe's hierarchical clustering, on the scores of
    # all pairs inside a linked group; a guarded pair (twins) scores 0 and still falls apart. "auto": 0.5, or
    # 0.25 on data the model measured to be noisy (see core/link.py).
    cluster_threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] = "auto"
    max_block_size: int = Field(default=50, ge=2)
    max_cluster_size: int = Field(default=25, ge=2)
    junk_values: list[str] = Field(default_factory=lambda: list(DEFAULT_JUNK_VALUES))
    # "auto": on, unless the data shows the field is too noisy to veto a link (see core/link.py); true / false force it.
    name_conflict_guard: bool | Literal["auto"] = "auto"
    birth_date_conflict_guard: bool | Literal["auto"] = "auto"


SURVIVORSHIP_STRATEGIES = ("source_priority", "most_recent", "most_frequent", "most_complete")
PROFILE_ATTRIBUTES = ("first_name", "middle_name", "last_name", "name_suffix", "birth_date", "gender",
                      "email", "phone", "address")


class Survivorship(_Strict):
    """How one attribute's value is chosen among a person's records. Written as a strategy name, or a mapping
    with `strategy` and, for `source_priority`, `sources` (the order to trust them in)."""

    strategy: Literal["source_priority", "most_recent", "most_frequent", "most_complete"]
    sources: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, raw: Any) -> Any:
        return {"strategy": raw} if isinstance(raw, str) else raw


DEFAULT_INSIGHTS = {
    "order_count": "count() where type = order",
    "lifetime_value": "sum(amount) where type = order and status != refunded",
    "last_order_at": "max(occurred_at) where type = order",
    "ticket_count": "count() where type = ticket",
    "open_tickets": "count() where type = ticket and status in (open, pending)",
    "last_engagement_at": "max(occurred_at)",
}


def _insight_definition(raw: Any) -> Any:
    from c360_pipelines.core.expressions import ExpressionError, parse_insight

    if isinstance(raw, str):
        try:
            parse_insight(raw)
        except ExpressionError as error:
            raise ValueError(f"{error}; expected e.g. 'sum(amount) where type = order'") from None
    return raw


class ProfileConfig(_Strict):
    """Golden profiles: which value of each attribute survives, and the calculated insights.

    `default` applies to every attribute without its own entry in `fields`. Ties are broken, in order, by
    recency, by `source_priority`'s order (else the order of `sources:`), then by record key, so the same
    data always gives the same profile.
    """

    default: Survivorship = Survivorship(strategy="most_frequent")
    fields: dict[str, Survivorship] = Field(default_factory=dict)
    source_priority: tuple[str, ...] = ()
    ignore_empty: bool = True
    insights: dict[str, Annotated[str, BeforeValidator(_insight_definition)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ProfileConfig:
        unknown = sorted(set(self.fields) - set(PROFILE_ATTRIBUTES))
        if unknown:
            raise ValueError(f"unknown profile attribute(s) in 'fields': {', '.join(unknown)}; "
                             f"expected some of: {', '.join(PROFILE_ATTRIBUTES)}")
        for name in self.insights:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"insight name '{name}' must match [a-z][a-z0-9_]*")
        return self

    def strategy_for(self, attribute: str) -> Survivorship:
        return self.fields.get(attribute, self.default)

    @property
    def all_insights(self) -> dict[str, str]:
        """The shipped default insights, with the user's added (a user's insight of the same name wins)."""
        return {**DEFAULT_INSIGHTS, **self.insights}


class EnvSecret(_Strict):
    """A secret read from an environment variable when it is needed, so that it never sits in c360.yaml."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    def resolve(self, where: str) -> str:
        value = os.environ.get(self.env)
        if not value:
            raise ConfigError(f"{where}: environment variable {self.env} is not set")
        return value


def _event_pattern(raw: Any) -> Any:
    if isinstance(raw, str) and not re.fullmatch(r"[a-z0-9_.]+\*?|\*", raw):
        raise ValueError(f"'{raw}' is not an event type (e.g. profile.created) or a prefix ending in * (profile.*)")
    return raw


EventPattern = Annotated[str, BeforeValidator(_event_pattern)]


class SubscriberConfig(_Strict):
    """A system that receives change events by webhook (Standard Webhooks signatures, CloudEvents bodies)."""

    name: str = Field(pattern=r"^[a-z0-9_]+$", max_length=63)
    url: str = Field(pattern=r"^https?://")
    events: tuple[EventPattern, ...] = ()
    secret: str | EnvSecret
    max_attempts: int = Field(default=8, ge=1)
    backoff_seconds: float = Field(default=2.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check_secret(self) -> SubscriberConfig:
        if isinstance(self.secret, str) and not self.secret.startswith("whsec_"):
            raise ValueError("'secret' must be a whsec_<base64> string (Standard Webhooks) or {env: NAME}")
        return self

    def wants(self, event_type: str) -> bool:
        """Whether the subscriber asked for this event type (no `events` means every type)."""
        if not self.events:
            return True
        return any(event_type == p or (p.endswith("*") and event_type.startswith(p[:-1])) for p in self.events)

    def signing_secret(self) -> str:
        where = f"subscribers ({self.name}).secret"
        value = self.secret.resolve(where) if isinstance(self.secret, EnvSecret) else self.secret
        if not value.startswith("whsec_"):
            raise ConfigError(f"{where}: the secret must look like whsec_<base64> (Standard Webhooks)")
        return value


def _condition(raw: Any) -> Any:
    from c360_pipelines.core.expressions import ExpressionError, parse_condition

    if isinstance(raw, str):
        try:
            parse_condition(raw)
        except ExpressionError as error:
            raise ValueError(f"{error}; expected e.g. 'lifetime_value >= 1000'") from None
    return raw


class ActionConfig(_Strict):
    """Insight to action: when `when` starts to hold on a profile, emit an event of type `emit`."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    on: tuple[Literal["profile.created", "profile.updated"], ...] = ("profile.created", "profile.updated")
    when: Annotated[str, BeforeValidator(_condition)]
    emit: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, raw: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true.
        if isinstance(raw, dict) and True in raw:
            raw = {**{k: v for k, v in raw.items() if k is not True}, "on": raw[True]}
        if isinstance(raw, dict) and isinstance(raw.get("on"), str):
            raw = {**raw, "on": [raw["on"]]}
        return raw


API_KEY_ENV_VAR = "C360_API_KEY"


class ApiConfig(_Strict):
    """The lookup API and Customer 360 page (`c360 serve`): who may read."""

    keys: list[str | EnvSecret] = Field(default_factory=list)

    def resolved_keys(self) -> list[str]:
        """Every usable key: the literal ones, those from their environment variables, and C360_API_KEY."""
        keys = [k for k in self.keys if isinstance(k, str)]
        keys += [os.environ[k.env] for k in self.keys if isinstance(k, EnvSecret) and os.environ.get(k.env)]
        if os.environ.get(API_KEY_ENV_VAR):
            keys.append(os.environ[API_KEY_ENV_VAR])
        return [k for k in keys if k]


class C360Config(_Strict):
    """The whole `c360.yaml`: the warehouse, the sources and matching. `base_dir` is where the file lives."""

    warehouse: str = DEFAULT_WAREHOUSE
    sources: list[SourceConfig] = Field(min_length=1)
    match: MatchConfig = Field(default_factory=MatchConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    subscribers: list[SubscriberConfig] = Field(default_factory=list)
    actions: list[ActionConfig] = Field(default_factory=list)
    api: ApiConfig = Field(default_factory=ApiConfig)
    base_dir: Path = Path(".")
    config_path: Path = Path(DEFAULT_CONFIG_NAME)

    @model_validator(mode="after")
    def _check_sources(self) -> C360Config:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        person_sources = {s.name for s in self.sources if s.kind == "person"}
        for source in self.sources:
            if source.kind == "engagement" and source.of not in person_sources:
                raise ValueError(
                    f"source '{source.name}': 'of: {source.of}' does not name a person source "
                    f"(person sources: {', '.join(sorted(person_sources)) or 'none'})"
                )
        rules = [("profile.source_priority", self.profile.source_priority), ("profile.default.sources", self.profile.default.sources)]
        rules += [(f"profile.fields.{name}.sources", rule.sources) for name, rule in self.profile.fields.items()]
        for key, listed in rules:
            unknown = sorted(set(listed) - person_sources)
            if unknown:
                raise ValueError(f"{key}: {', '.join(unknown)} is not a person source "
                                 f"(person sources: {', '.join(sorted(person_sources))})")
        return self

    @model_validator(mode="after")
    def _check_events(self) -> C360Config:
        from c360_pipelines.core.expressions import fields_of, parse_condition
        from c360_pipelines.model import GoldenProfile

        for group in ("subscribers", "actions"):
            names = [item.name for item in getattr(self, group)]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{group}: names must be unique; repeated: {', '.join(repeated)}")
        known = set(GoldenProfile.model_fields) | set(self.profile.all_insights)
        for action in self.actions:
            unknown = sorted(fields_of(parse_condition(action.when)) - known)
            if unknown:
                raise ValueError(f"actions ({action.name}).when: unknown field(s) {', '.join(unknown)}; profile "
                                 f"attributes and insights: {', '.join(sorted(known))}")
        return self

    @property
    def source_order(self) -> list[str]:
        """Person sources in the order that breaks ties: `profile.source_priority` first, then as declared."""
        declared = [s.name for s in self.person_sources]
        return [*self.profile.source_priority, *(n for n in declared if n not in self.profile.source_priority)]

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(f"{self.config_path}: no source named '{name}'")

    @property
    def person_sources(self) -> list[SourceConfig]:
        return [s for s in self.sources if s.kind == "person"]

    @property
    def state_dir(self) -> Path:
        """Where c360 keeps its own state (embedded warehouse, Dagster instance): `.c360/` beside the config."""
        return self.base_dir / ".c360"

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME))


def load_config(path: str | Path | None = None) -> C360Config:
    """Read and validate a `c360.yaml`; every problem is a `ConfigError` naming the file and the key."""
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        raise ConfigError(
            f"{config_path}: config file not found (pass --config or set {CONFIG_ENV_VAR})"
        )
    try:
        document = yaml.safe_load(config_path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{config_path}:{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{config_path}: not UTF-8 text ({error.reason})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{config_path}: expected a mapping with 'sources:' at the top level")

    base_dir = config_path.resolve().parent
    document = {**document, "base_dir": base_dir, "config_path": config_path}
    try:
        config = C360Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(config_path, document, error)) from None
    warehouse = os.environ.get(WAREHOUSE_ENV_VAR) or config.warehouse
    return config.model_copy(update={"warehouse": resolve_sqlite_url(warehouse, base_dir)})


def resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path relative to the config's folder (and create that folder)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite://" or url.startswith("sqlite:////"):
        return url
    relative = url[len(prefix):]
    if relative in ("", ":memory:"):
        return url
    path = (base_dir / relative).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{path}"


def _describe_validation_error(path: Path, document: dict[str, Any], error: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for problem in error.errors():
        lines.append(f"  {_location(document, problem['loc'])}: {_message(problem)}")
    return "\n".join(lines)


def _location(document: dict[str, Any], loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    node: Any = document
    for index, part in enumerate(loc):
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if index == 1 and loc[0] == "sources" and isinstance(node, dict) and node.get("name"):
                parts[-1] += f" ({node['name']})"
            continue
        if part in ("function-after[_check_shape()]", "function-before[_from_shorthand()]"):
            continue
        if part.startswith(("function-", "constrained-", "literal[")):
            continue
        parts.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _message(problem: dict[str, Any]) -> str:
    message = str(problem["msg"])
    message = message.removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        return "unknown key"
    if problem["type"] == "missing":
        return "required key is missing"
    if "input" in problem and problem["type"] not in ("value_error",) and not isinstance(
        problem["input"], (dict, list)
    ):
        message += f" (got {problem['input']!r})"
    return message
