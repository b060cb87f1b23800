"""The canonical customer model, in the spirit of Salesforce's Cloud Information Model.

Each pydantic class here is one warehouse table. The class is the single source of truth: the SQL tables
(`TABLES`), the column order of every frame written to them, and the reference in `docs/tables.md` are all
derived from it. Every canonical table also exists as `staged_<name>`, which holds every batch ever staged;
the canonical table holds the current version of each source record.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field


class _Row(BaseModel):
    """Columns that tie a canonical row to the exact source row it came from."""

    source: str = Field(description="Name of the source in c360.yaml.")
    batch_id: str = Field(description="The batch (landed file or SQL pull) the row came from.")
    row_number: int = Field(description="1-based row number of the source row within its batch.")


class _PersonRow(_Row):
    source_record_id: str = Field(description="The source's own key for the person record.")


class Individual(_PersonRow):
    """One row per source record of a person: names, birth date and when the source last changed it."""

    updated_at: dt.datetime | None = Field(None, description="When the record last changed in the source.")
    updated_at_raw: str | None = Field(None, description="`updated_at` exactly as the source sent it.")
    first_name: str | None = Field(None, description="Given name, cleaned (whitespace, case).")
    middle_name: str | None = Field(None, description="Middle name(s), cleaned.")
    last_name: str | None = Field(None, description="Family name, cleaned.")
    name_suffix: str | None = Field(None, description="Jr, Sr, III, ...")
    first_name_norm: str | None = Field(None, description="Given name folded for matching: lower ASCII letters.")
    last_name_norm: str | None = Field(None, description="Family name folded for matching: lower ASCII letters.")
    first_name_raw: str | None = Field(None, description="Given name as sent.")
    last_name_raw: str | None = Field(None, description="Family name as sent.")
    full_name_raw: str | None = Field(None, description="One-field name as sent, when the source has one.")
    birth_date: dt.date | None = Field(None, description="Date of birth; empty when it did not parse.")
    birth_date_raw: str | None = Field(None, description="Date of birth as sent.")
    birth_date_valid: bool | None = Field(None, description="False when a birth date was sent but did not parse.")
    gender: str | None = Field(None, description="F, M or X; empty when unknown.")
    gender_raw: str | None = Field(None, description="Gender as sent.")
    loaded_at: dt.datetime = Field(description="When c360 staged the row.")


class ContactPointEmail(_PersonRow):
    """Every email address a source record carries, one row each."""

    source_column: str = Field(description="The source column it was read from.")
    email_raw: str = Field(description="The address as sent.")
    email: str | None = Field(None, description="Trimmed and lower-cased.")
    email_key: str | None = Field(
        None, description="Matching key: gmail dots and `+tags` folded, so a.b+shop@gmail.com = ab@gmail.com."
    )
    domain: str | None = Field(None, description="The part after @.")
    is_valid: bool = Field(description="Whether the address is syntactically valid (WHATWG rules).")


class ContactPointPhone(_PersonRow):
    """Every phone number a source record carries, parsed with Google's libphonenumber."""

    source_column: str = Field(description="The source column it was read from.")
    phone_raw: str = Field(description="The number as sent.")
    phone_e164: str | None = Field(None, description="E.164 form (+15551234567) when it could be parsed.")
    extension: str | None = Field(None, description="Extension, when one was given.")
    phone_region: str | None = Field(None, description="ISO country of the number.")
    phone_type: str | None = Field(None, description="mobile, fixed_line, fixed_line_or_mobile, toll_free, voip, ...")
    is_valid: bool = Field(description="Whether libphonenumber considers it a valid, assigned number.")


class ContactPointAddress(_PersonRow):
    """Every postal address a source record carries, split into parts with USPS abbreviations folded."""

    source_column: str = Field(description="The source column(s) it was read from.")
    address_raw: str = Field(description="The address as sent (parts joined with ', ').")
    line1: str | None = Field(None, description="Street line, upper case, USPS Pub 28 abbreviations (ST, AVE, N).")
    line2: str | None = Field(None, description="Unit line (APT 4, STE 200).")
    city: str | None = Field(None, description="City, upper case.")
    region: str | None = Field(None, description="State or region; US states as 2-letter codes.")
    postal_code: str | None = Field(None, description="Postal code; US ZIP codes as 5 digits.")
    country: str | None = Field(None, description="ISO 3166 alpha-2 country.")
    is_parsed: bool = Field(description="False when a one-line address could not be split into parts.")


class PartyIdentification(_PersonRow):
    """Identifiers a person holds in some system (loyalty number, customer number, tax ID)."""

    identification_type: str = Field(description="The identifier type named in c360.yaml (e.g. loyalty_number).")
    identifier_raw: str = Field(description="The identifier as sent.")
    identifier: str = Field(description="Upper case, spaces and dashes removed.")


class Engagement(_Row):
    """Interactions rather than people: orders, tickets, visits; each points at a person record."""

    engagement_id: str = Field(description="The source's key for the interaction.")
    person_source: str = Field(description="The person source the interaction belongs to (`of`).")
    person_record_id: str = Field(description="Key of the person record in `person_source`.")
    engagement_type: str = Field(description="order, ticket, visit, ...: the `type` field, else the source name.")
    occurred_at: dt.datetime | None = Field(None, description="When it happened.")
    occurred_at_raw: str | None = Field(None, description="`occurred_at` as sent.")
    amount: float | None = Field(None, description="Monetary amount, when there is one.")
    amount_raw: str | None = Field(None, description="Amount as sent.")
    currency: str | None = Field(None, description="ISO 4217 code, upper case.")
    channel: str | None = Field(None, description="web, store, phone, email, ...")
    status: str | None = Field(None, description="Status in the source system (open, closed, shipped, ...).")
    attributes: str | None = Field(None, description="Every mapped field as sent, as a JSON object.")
    loaded_at: dt.datetime = Field(description="When c360 staged the row.")


class RawRecord(_Row):
    """Every readable row of every batch exactly as the source sent it: the landing zone."""

    record: str = Field(description="The row as a JSON object of column name to text value.")


class QuarantinedRow(BaseModel):
    """A row c360 could not use, kept with the reason so that nothing a source sent is lost."""

    source: str = Field(description="Name of the source.")
    batch_id: str = Field(description="The batch it came from.")
    row_number: int | None = Field(None, description="Row number within the batch, when known.")
    stage: str = Field(description="extract (could not be read) or stage (could not be mapped).")
    reason: str = Field(description="Why the row was set aside.")
    raw: str = Field(description="The row as sent: a JSON object, or the unreadable text.")
    quarantined_at: dt.datetime = Field(description="When it was set aside.")


class Batch(BaseModel):
    """The ledger of batches: what was landed, when, and how its rows were accounted for."""

    source: str = Field(description="Name of the source.")
    batch_id: str = Field(description="Partition key of the batch.")
    seq: int = Field(description="Order in which batches of a source arrived; later wins ties.")
    location: str = Field(description="File path, or the SQL query, that the batch was read from.")
    fingerprint: str = Field(description="Size and modification time of a file, or count and max(updated) of a pull.")
    rows_read: int | None = Field(None, description="Rows the source sent in the batch.")
    rows_landed: int | None = Field(None, description="Rows landed in raw_record.")
    rows_staged: int | None = Field(None, description="Rows staged into the canonical tables.")
    rows_quarantined: int | None = Field(None, description="Rows set aside in quarantine, at any stage.")
    extracted_at: dt.datetime | None = Field(None, description="When the batch was landed.")
    staged_at: dt.datetime | None = Field(None, description="When the batch was last staged.")


class MatchModelVersion(BaseModel):
    """Every trained match model: m and u per comparison level, the prior, and what it was trained on."""

    version: int = Field(description="1 for the first model, then one more per training.")
    trained_at: dt.datetime = Field(description="When it was trained.")
    records: int = Field(description="Source records it was trained on.")
    candidate_pairs: int = Field(description="Candidate pairs EM ran over.")
    parameters: str = Field(description="The model as JSON: m, u, prior.")


class IdentityLink(BaseModel):
    """Every scored candidate pair worth keeping (linked, guarded, ruled on, or probability >= 0.01), with its evidence."""

    record_a: str = Field(description="One record, as source:source_record_id.")
    record_b: str = Field(description="The other record.")
    probability: float = Field(description="The model's match probability.")
    match_weight: float = Field(description="The model's match weight (log2 odds).")
    rule: str | None = Field(None, description="The match rule that held for the pair, if any.")
    guard: str | None = Field(None, description="The guard that stopped a link, if any (name_conflict).")
    linked: bool = Field(description="Whether the pair was linked before clustering.")
    evidence: str = Field(description="JSON: probability, weight, each field's contribution, rule, guard, and the kinds of household value the pair shares (counted once).")


class Xref(BaseModel):
    """Which person every source record belongs to: the universal ID lookup."""

    source: str = Field(description="Name of the source.")
    source_record_id: str = Field(description="The source's key for the record.")
    c360_id: str = Field(description="The person's 360 ID.")
    evidence: str = Field(description="JSON: the strongest link that ties the record to its person, or 'single record'.")


class PersonId(BaseModel):
    """Every 360 ID ever issued: active, or merged into a survivor, or retired."""

    c360_id: str = Field(description="The 360 ID.")
    status: str = Field(description="active, merged (see merged_into) or retired.")
    merged_into: str | None = Field(None, description="For a merged ID, the ID that absorbed it.")
    first_seen: dt.datetime = Field(description="When the ID was issued.")
    last_changed: dt.datetime = Field(description="When its status last changed.")


class IdentityGuardEvent(BaseModel):
    """What the guards did in each identity run: values too common to match on, oversized clusters, records
    that fit two people equally and were left on their own."""

    resolved_at: dt.datetime = Field(description="The identity run.")
    guard: str = Field(description="too_common_value, component_size, cluster_size or ambiguous_record.")
    value: str | None = Field(None, description="The value, for a too-common value; SOURCE:ID, for an ambiguous "
                                                "record.")
    records: int = Field(description="How many records were involved.")
    detail: str = Field(description="What happened.")


class IdChange(BaseModel):
    """The history of every 360 ID: when it was created, absorbed other IDs (merged) or split."""

    changed_at: dt.datetime = Field(description="The identity run that made the change.")
    c360_id: str = Field(description="The ID that was created, that survived a merge, or that split.")
    change: str = Field(description="created, merged or split.")
    related: str | None = Field(None, description="For merged: the absorbed IDs; for split: the IDs that came out; "
                                                  "comma-separated.")


class ProfileEvent(BaseModel):
    """The outbox: every profile change as a CloudEvents 1.0 event, written with the profile change itself."""

    seq: int = Field(description="Position in the outbox; events of one profile are delivered in this order.")
    event_id: str = Field(description="The CloudEvents `id`, stable: the same change always has the same id.")
    type: str = Field(description="profile.created, profile.updated, profile.merged, profile.split, "
                                  "profile.deleted, or an action's own type.")
    subject: str = Field(description="The 360 ID the event is about.")
    time: dt.datetime = Field(description="When the change was made (UTC).")
    data: str = Field(description="The event's `data`, as JSON.")


class EventDelivery(BaseModel):
    """Where each event stands for each subscriber: pending, delivered, or dead (see dead_letter)."""

    subscriber: str = Field(description="The subscriber's name in c360.yaml.")
    seq: int = Field(description="The event's position in the outbox.")
    event_id: str = Field(description="The event.")
    subject: str = Field(description="The event's 360 ID (deliveries of one subject go in order).")
    status: str = Field(description="pending, delivered or dead.")
    attempts: int = Field(description="Attempts made so far.")
    next_attempt_at: dt.datetime = Field(description="When it may be tried next (retries back off exponentially).")
    delivered_at: dt.datetime | None = Field(None, description="When the subscriber accepted it (2xx).")
    last_error: str | None = Field(None, description="What went wrong on the last failed attempt.")


class DeliveryAttempt(BaseModel):
    """The delivery log: every attempt to deliver an event, successful or not."""

    subscriber: str = Field(description="The subscriber.")
    event_id: str = Field(description="The event.")
    attempt: int = Field(description="1 for the first attempt, and so on.")
    attempted_at: dt.datetime = Field(description="When the request was sent.")
    status_code: int | None = Field(None, description="The HTTP status the receiver answered, if it answered.")
    error: str | None = Field(None, description="Connection error, timeout or non-2xx answer.")
    duration_ms: float = Field(description="How long the attempt took.")


class DeadLetter(BaseModel):
    """Events a subscriber never accepted after every retry; `c360 events replay` sends them again."""

    subscriber: str = Field(description="The subscriber.")
    seq: int = Field(description="The event's position in the outbox.")
    event_id: str = Field(description="The event.")
    failed_at: dt.datetime = Field(description="When the last attempt failed.")
    attempts: int = Field(description="How many attempts were made.")
    last_error: str = Field(description="What went wrong on the last attempt.")


class SubscriberCursor(BaseModel):
    """How far into the outbox each subscriber's deliveries have been queued."""

    subscriber: str = Field(description="The subscriber.")
    last_seq: int = Field(description="The last outbox position queued for it.")


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "events": ProfileEvent,
    "event_delivery": EventDelivery,
    "delivery_attempt": DeliveryAttempt,
    "dead_letter": DeadLetter,
    "subscriber_cursor": SubscriberCursor,
}


class TrainingLabel(BaseModel):
    """A person's answer to "are these two records the same person?": training data for the match model."""

    record_a: str = Field(description="One record, as source:source_record_id.")
    record_b: str = Field(description="The other record.")
    label: str = Field(description="match or distinct.")
    labeled_at: dt.datetime = Field(description="When it was answered.")
    labeled_by: str = Field(description="Who answered (the login name, for c360 label).")


class GoldenProfile(BaseModel):
    """One golden profile per active 360 ID: the surviving value of every attribute, chosen by the profile rules."""

    c360_id: str = Field(description="The person's 360 ID (active).")
    first_name: str | None = Field(None, description="Given name.")
    middle_name: str | None = Field(None, description="Middle name(s).")
    last_name: str | None = Field(None, description="Family name.")
    name_suffix: str | None = Field(None, description="Jr, Sr, III, ...")
    full_name: str | None = Field(None, description="First, middle, last and suffix joined.")
    first_name_norm: str | None = Field(None, description="Given name folded for search: lower ASCII letters.")
    last_name_norm: str | None = Field(None, description="Family name folded for search: lower ASCII letters.")
    birth_date: dt.date | None = Field(None, description="Date of birth.")
    gender: str | None = Field(None, description="F, M or X.")
    email: str | None = Field(None, description="The primary email address.")
    phone: str | None = Field(None, description="The primary phone number, E.164.")
    address_line1: str | None = Field(None, description="Primary address: street line.")
    address_line2: str | None = Field(None, description="Primary address: unit line.")
    city: str | None = Field(None, description="Primary address: city.")
    region: str | None = Field(None, description="Primary address: state or region.")
    postal_code: str | None = Field(None, description="Primary address: postal code.")
    country: str | None = Field(None, description="Primary address: ISO country.")
    record_count: int = Field(description="How many source records make up the person.")
    sources: str = Field(description="The sources that know the person, comma-separated, sorted.")
    first_seen: dt.datetime | None = Field(None, description="Earliest record update or engagement.")
    last_seen: dt.datetime | None = Field(None, description="Latest record update or engagement.")
    profile_hash: str = Field(description="Fingerprint of the profile's content, to tell a change from a rerun.")
    last_changed: dt.datetime = Field(description="When the profile's content last changed.")


class ProfileContactPoint(BaseModel):
    """Every email, phone and address of a profile, each with the sources that sent it; one of each kind is primary."""

    c360_id: str = Field(description="The person's 360 ID.")
    kind: str = Field(description="email, phone or address.")
    value: str = Field(description="The standard form: lower-case email, E.164 phone, one-line address.")
    value_key: str = Field(description="The key the value is grouped by (email matching key, E.164, address parts).")
    status: str = Field(description="ok, invalid (did not parse or validate) or placeholder (a junk value).")
    detail: str | None = Field(None, description="Phone type (mobile, fixed_line, ...) or email domain.")
    is_primary: bool = Field(description="The one the profile rules chose for the golden profile.")
    sources: str = Field(description="Sources that sent it, comma-separated, sorted.")
    records: str = Field(description="Source records that carry it, as source:id, comma-separated.")
    first_seen: dt.datetime | None = Field(None, description="Earliest time a record carrying it was current.")
    last_seen: dt.datetime | None = Field(None, description="Latest such time.")


class ProfileAttributeProvenance(BaseModel):
    """Where every single-valued profile attribute came from: the winning record, the rule, and what it beat."""

    c360_id: str = Field(description="The person's 360 ID.")
    attribute: str = Field(description="first_name, last_name, birth_date, email, phone, address, ...")
    value: str = Field(description="The value that won, as text.")
    source: str = Field(description="The source of the winning record.")
    source_record_id: str = Field(description="The winning record.")
    rule: str = Field(description="The strategy that decided (most_frequent, most_recent, source_priority, "
                                  "most_complete), and, after a tie, the tie-break that did.")
    candidates: int = Field(description="How many source records offered a value.")
    competing: str = Field(description="JSON list of the values that lost, each with its record: "
                                       '[{"value": ..., "record": "source:id"}].')


class ProfileInsight(BaseModel):
    """Calculated insights: the values of the `profile.insights` in c360.yaml (and the defaults) per person."""

    c360_id: str = Field(description="The person's 360 ID.")
    insight: str = Field(description="The insight's name, e.g. lifetime_value.")
    value: str | None = Field(None, description="The value as text (ISO 8601 for times).")
    number: float | None = Field(None, description="The value as a number, when it is one.")


PROFILE_MODELS: dict[str, type[BaseModel]] = {
    "golden_profile": GoldenProfile,
    "profile_contact_points": ProfileContactPoint,
    "profile_attribute_provenance": ProfileAttributeProvenance,
    "profile_insights": ProfileInsight,
}

class ProfileMembership(BaseModel):
    """The person records each profile was last built from, and the batch of the version it read. Comparing it
    with today's xref and canonical tables tells which profiles gained, lost, swapped or saw a changed record."""

    source: str = Field(description="Name of the source.")
    source_record_id: str = Field(description="The source's key for the record.")
    batch_id: str = Field(description="The batch of the record's version the build read.")
    c360_id: str = Field(description="The profile the record was part of.")


class ProfileEngagementSeen(BaseModel):
    """The engagement rows each profile's insights were last computed from, and the batch of each."""

    source: str = Field(description="The engagement source.")
    engagement_id: str = Field(description="The source's key for the interaction.")
    batch_id: str = Field(description="The batch of the version the build read.")
    c360_id: str = Field(description="The profile it counted towards.")


class ProfileBuild(BaseModel):
    """The last profile build: under which rules, so that the next one rebuilds only the profiles whose records,
    engagement or identity changed since (and every profile when the rules changed)."""

    built_at: dt.datetime = Field(description="When the build finished writing.")
    rules_fingerprint: str = Field(description="Hash of the profile rules, junk values, source order and c360 "
                                                "version the build applied.")
    mode: str = Field(description="full or incremental.")
    profiles_built: int = Field(description="How many profiles it (re)built.")


PROFILE_STATE_MODELS: dict[str, type[BaseModel]] = {
    "profile_membership": ProfileMembership,
    "profile_engagement_seen": ProfileEngagementSeen,
    "profile_build": ProfileBuild,
}

class IdentityMembership(BaseModel):
    """The version of each person record identity last resolved (by its batch): a record whose version is newer,
    or that is new or gone, is what the next incremental resolution starts from."""

    source: str = Field(description="Name of the source.")
    source_record_id: str = Field(description="The source's key for the record.")
    batch_id: str = Field(description="The batch of the record's version that was resolved.")


class IdentityRun(BaseModel):
    """The last identity resolution: full (every record) or incremental (the changed records and the people
    they touch), under which model, rules and common values."""

    resolved_at: dt.datetime = Field(description="When it finished.")
    mode: str = Field(description="full or incremental.")
    fingerprint: str = Field(description="Hash of the match settings, model version and too-common values it used; "
                                         "a change means a full resolution.")
    records: int = Field(description="Person records in the warehouse at the time.")
    records_at_full: int = Field(description="Person records at the last full resolution.")
    records_resolved: int = Field(description="Records it (re)clustered.")


IDENTITY_MODELS: dict[str, type[BaseModel]] = {
    "training_label": TrainingLabel,
    "match_model": MatchModelVersion,
    "identity_link": IdentityLink,
    "xref": Xref,
    "identity_membership": IdentityMembership,
    "identity_run": IdentityRun,
    "ids": PersonId,
    "identity_guard": IdentityGuardEvent,
    "id_change": IdChange,
}

CANONICAL_MODELS: dict[str, type[BaseModel]] = {
    "individual": Individual,
    "contact_point_email": ContactPointEmail,
    "contact_point_phone": ContactPointPhone,
    "contact_point_address": ContactPointAddress,
    "party_identification": PartyIdentification,
    "engagement": Engagement,
}
PERSON_TABLES = tuple(name for name in CANONICAL_MODELS if name != "engagement")
LEDGER_MODELS: dict[str, type[BaseModel]] = {
    "raw_record": RawRecord,
    "quarantine": QuarantinedRow,
    "batch": Batch,
}


def staged_table_name(canonical: str) -> str:
    return f"staged_{canonical}"


def columns_of(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def datetime_columns(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if _base_type(field.annotation) is dt.datetime]


def date_columns(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if _base_type(field.annotation) is dt.date]


def _base_type(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


_SQL_TYPES: dict[Any, sa.types.TypeEngine[Any]] = {
    str: sa.Text(),
    int: sa.BigInteger(),
    float: sa.Float(),
    bool: sa.Boolean(),
    dt.date: sa.Date(),
    dt.datetime: sa.DateTime(),
}

_INDEXES: dict[str, list[tuple[str, ...]]] = {
    "individual": [("source", "source_record_id"), ("source", "batch_id", "row_number")],
    "contact_point_email": [("source", "source_record_id"), ("email_key",)],
    "contact_point_phone": [("source", "source_record_id"), ("phone_e164",)],
    "contact_point_address": [("source", "source_record_id"), ("postal_code",)],
    "party_identification": [("source", "source_record_id"), ("identification_type", "identifier")],
    "engagement": [("person_source", "person_record_id"), ("source", "engagement_id"), ("source", "batch_id")],
    "raw_record": [("source", "batch_id")],
    "training_label": [("record_a", "record_b")],
    "xref": [("source", "source_record_id"), ("c360_id",)],
    "identity_membership": [("source", "source_record_id")],
    "identity_link": [("record_a",), ("record_b",)],
    "ids": [("c360_id",), ("merged_into",)],
    "quarantine": [("source", "batch_id")],
    "golden_profile": [("c360_id",), ("last_name_norm", "first_name_norm"), ("postal_code",)],
    "profile_contact_points": [("c360_id",), ("kind", "value_key")],
    "profile_attribute_provenance": [("c360_id",)],
    "profile_insights": [("c360_id",)],
    "profile_membership": [("source", "source_record_id"), ("c360_id",)],
    "profile_engagement_seen": [("source", "engagement_id"), ("c360_id",)],
    "id_change": [("c360_id",)],
    "events": [("seq",), ("subject", "seq"), ("event_id",)],
    "event_delivery": [("subscriber", "status", "seq"), ("subscriber", "subject", "status"), ("subscriber", "seq")],
    "delivery_attempt": [("subscriber", "event_id")],
    "dead_letter": [("subscriber", "seq")],
}


def _table(metadata: sa.MetaData, name: str, model: type[BaseModel], indexes: list[tuple[str, ...]]) -> sa.Table:
    columns = [
        sa.Column(
            field_name,
            _SQL_TYPES[_base_type(field.annotation)],
            nullable=not field.is_required(),
            comment=field.description,
        )
        for field_name, field in model.model_fields.items()
    ]
    table = sa.Table(name, metadata, *columns, comment=(model.__doc__ or "").strip())
    for index_columns in indexes:
        sa.Index(f"ix_{name}__{'__'.join(index_columns)}", *(table.c[c] for c in index_columns))
    return table


def _build_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    for name, model in CANONICAL_MODELS.items():
        _table(metadata, name, model, _INDEXES.get(name, []))
        _table(metadata, staged_table_name(name), model, [("source", "batch_id", "row_number")])
    for name, model in LEDGER_MODELS.items():
        table = _table(metadata, name, model, _INDEXES.get(name, []))
        if name == "batch":
            table.append_constraint(sa.PrimaryKeyConstraint("source", "batch_id"))
    for name, model in {**IDENTITY_MODELS, **PROFILE_MODELS, **PROFILE_STATE_MODELS, **EVENT_MODELS}.items():
        _table(metadata, name, model, _INDEXES.get(name, []))
    return metadata


METADATA = _build_metadata()
TABLES: dict[str, sa.Table] = dict(METADATA.tables)
MODELS: dict[str, type[BaseModel]] = {
    **CANONICAL_MODELS,
    **{staged_table_name(n): m for n, m in CANONICAL_MODELS.items()},
    **LEDGER_MODELS,
    **IDENTITY_MODELS,
    **PROFILE_MODELS,
    **PROFILE_STATE_MODELS,
    **EVENT_MODELS,
}
