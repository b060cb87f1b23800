"""Map one raw batch of a source onto the canonical model: the staging step.

`stage_batch` takes the batch's rows as text (one column per source column, plus `_row_number`) and the
source's mapping from `c360.yaml`, and returns one frame per canonical table plus the rows it set aside.
A field that fails to parse keeps its raw value and a flag; only a row without its key (or, for an
engagement, without its person key) or a duplicate key within the batch is set aside, with the reason.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd

from c360_pipelines.config import ConfigError, FieldSpec, SourceConfig
from c360_pipelines.core import standardise as std
from c360_pipelines.model import CANONICAL_MODELS, columns_of

ROW_NUMBER = "_row_number"
RAW_JSON = "_raw"
SOURCE_ROW = "_row"


@dataclass
class StagedBatch:
    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame


def check_mapped_columns(source: SourceConfig, columns: list[str], location: str) -> None:
    """Fail with the source, key and column when the mapping reads a column the batch does not have."""
    available = set(columns)
    for key, wanted in source.mapped_columns().items():
        missing = [c for c in wanted if c not in available]
        if missing:
            raise ConfigError(
                f"source '{source.name}', key '{key}': column {', '.join(repr(c) for c in missing)} "
                f"not found in {location} (columns: {', '.join(columns) or 'none'})"
            )


PARALLEL_MIN_ROWS = 40_000


def stage_batch(
    rows: pd.DataFrame, source: SourceConfig, batch_id: str, loaded_at: dt.datetime, workers: int | None = None
) -> StagedBatch:
    """Turn a batch's raw rows into canonical rows. `rows` also carries `_raw`, each row's JSON as landed.

    Keys are checked on the whole batch (a duplicate can be anywhere in it); the standardising, which is
    row-independent and CPU-bound, runs on `workers` processes (default: every core) for large batches.
    """
    rows = rows.reset_index(drop=True)
    key_column = source.person_id if source.kind == "engagement" else None
    rows, quarantine = _set_aside_unusable(rows, source, key_column, batch_id, loaded_at)
    workers = workers or os.cpu_count() or 1
    if workers < 2 or len(rows) < PARALLEL_MIN_ROWS:
        return StagedBatch(_canonical_tables(rows, source, batch_id, loaded_at), quarantine)
    bounds = [(len(rows) * i // workers, len(rows) * (i + 1) // workers) for i in range(workers)]
    global _FORKED_BATCH
    _FORKED_BATCH = (rows, source, batch_id, loaded_at)
    try:
        # fork: the workers read their slice of `rows` from inherited memory instead of a pickled copy; spawn
        # and forkserver would also re-run __main__, which breaks under stdin scripts and some entry points.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(_stage_slice, bounds))
    finally:
        _FORKED_BATCH = None
    tables = {name: pd.concat([part[name] for part in parts], ignore_index=True) for name in parts[0]}
    return StagedBatch(tables, quarantine)


_FORKED_BATCH: tuple[pd.DataFrame, SourceConfig, str, dt.datetime] | None = None


def _stage_slice(bounds: tuple[int, int]) -> dict[str, pd.DataFrame]:
    assert _FORKED_BATCH is not None, "a staging worker must be forked from stage_batch"
    rows, source, batch_id, loaded_at = _FORKED_BATCH
    start, stop = bounds
    return _canonical_tables(rows.iloc[start:stop].reset_index(drop=True), source, batch_id, loaded_at)


def _canonical_tables(
    rows: pd.DataFrame, source: SourceConfig, batch_id: str, loaded_at: dt.datetime
) -> dict[str, pd.DataFrame]:
    base = pd.DataFrame(
        {"source": source.name, "batch_id": batch_id, "row_number": rows[ROW_NUMBER].astype("int64")},
        index=rows.index,
    )
    record_id = std.blank_to_na(rows[source.id])
    if source.kind == "engagement":
        tables = {name: _empty(name) for name in CANONICAL_MODELS}
        tables["engagement"] = _engagement(rows, source, base, record_id, loaded_at)
        return tables
    person = base.assign(source_record_id=record_id)
    return {
        "individual": _individual(rows, source, person, loaded_at),
        "contact_point_email": _emails(rows, source, person),
        "contact_point_phone": _phones(rows, source, person),
        "contact_point_address": _addresses(rows, source, person),
        "party_identification": _identifiers(rows, source, person),
        "engagement": _empty("engagement"),
    }


def _empty(table: str) -> pd.DataFrame:
    return pd.DataFrame(columns=columns_of(CANONICAL_MODELS[table]))


def _set_aside_unusable(
    rows: pd.DataFrame, source: SourceConfig, person_key: str | None, batch_id: str, when: dt.datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    reasons = pd.Series(pd.NA, index=rows.index, dtype="string")
    record_id = std.blank_to_na(rows[source.id])
    reasons = reasons.mask(record_id.isna(), f"missing record key (column '{source.id}')")
    if person_key is not None:
        person_id = std.blank_to_na(rows[person_key])
        reasons = reasons.mask(reasons.isna() & person_id.isna(), f"missing person key (column '{person_key}')")

    keyed = reasons.isna()
    order = _version_order(rows, source)
    ranked = pd.DataFrame({"key": record_id, "order": order, "row": rows[ROW_NUMBER]})[keyed]
    ranked = ranked.sort_values(["key", "order", "row"], na_position="first")
    superseded = ranked.duplicated("key", keep="last")
    if superseded.any():
        keeper = ranked.drop_duplicates("key", keep="last").set_index("key")["row"]
        loser_rows = ranked[superseded]
        reasons.loc[loser_rows.index] = (
            f"duplicate record key in batch (column '{source.id}'); superseded by row "
            + loser_rows["key"].map(keeper).astype(std.TEXT)
        )

    bad = reasons.notna()
    quarantine = pd.DataFrame(
        {
            "source": source.name,
            "batch_id": batch_id,
            "row_number": rows.loc[bad, ROW_NUMBER].astype("int64"),
            "stage": "stage",
            "reason": reasons[bad],
            "raw": rows.loc[bad, RAW_JSON] if RAW_JSON in rows else "",
            "quarantined_at": when,
        }
    )
    return rows[~bad].reset_index(drop=True), quarantine.reset_index(drop=True)


def _version_order(rows: pd.DataFrame, source: SourceConfig) -> pd.Series:
    """Within a batch, the row with the latest updated_at (then the last row) is the current version."""
    if source.updated_at is None:
        return pd.Series(0, index=rows.index)
    stamps = std.parse_datetimes(_single_value(rows, source.updated_at), source.updated_at.format)
    return stamps.fillna(pd.Timestamp.min)


# ------------------------------------------------------------------------------------------ field values


def _single_value(rows: pd.DataFrame, spec: FieldSpec | None) -> pd.Series:
    """One text value per row: a constant, the joined columns, or the first non-empty column."""
    if spec is None:
        return pd.Series(pd.NA, index=rows.index, dtype="string")
    if spec.is_constant:
        value = pd.NA if spec.value is None else str(spec.value)
        return pd.Series(value, index=rows.index, dtype="string")
    if spec.join is not None:
        return _joined(rows, spec.columns, spec.join)
    result = std.blank_to_na(rows[spec.columns[0]])
    for column in spec.columns[1:]:
        result = result.fillna(std.blank_to_na(rows[column]))
    return result


def _joined(rows: pd.DataFrame, columns: tuple[str, ...], separator: str) -> pd.Series:
    parts = [std.blank_to_na(rows[c]) for c in columns]
    joined = pd.Series(pd.NA, index=rows.index, dtype="string")
    for part in parts:
        joined = joined.mask(joined.isna(), part).mask(joined.notna() & part.notna(), joined + separator + part)
    return joined


def _each_value(rows: pd.DataFrame, spec: FieldSpec | None) -> list[tuple[str, pd.Series]]:
    """Values of a multi-valued field, one series per column (labelled by column), unless joined."""
    if spec is None:
        return []
    if spec.is_constant or spec.join is not None:
        label = "+".join(spec.columns) if spec.columns else "(constant)"
        return [(label, _single_value(rows, spec))]
    return [(column, std.blank_to_na(rows[column])) for column in spec.columns]


def _long(person: pd.DataFrame, values: list[tuple[str, pd.Series]], raw_name: str) -> pd.DataFrame:
    """Stack several value columns into one row per non-empty value; `_row` says which batch row it came from."""
    pieces = []
    for label, series in values:
        present = series.notna()
        pieces.append(
            person[present].assign(**{SOURCE_ROW: person.index[present], "source_column": label, raw_name: series[present]})
        )
    if not pieces:
        empty = {SOURCE_ROW: pd.Series(dtype="int64"), "source_column": pd.Series(dtype="string")}
        return person.iloc[0:0].assign(**empty, **{raw_name: pd.Series(dtype="string")})
    return pd.concat(pieces, ignore_index=True)


# ------------------------------------------------------------------------------------------ tables


def _individual(rows: pd.DataFrame, source: SourceConfig, person: pd.DataFrame, loaded_at: dt.datetime) -> pd.DataFrame:
    fields = source.fields
    first_raw = _single_value(rows, fields.get("first_name"))
    last_raw = _single_value(rows, fields.get("last_name"))
    names = pd.DataFrame(
        {
            "first_name": first_raw,
            "middle_name": _single_value(rows, fields.get("middle_name")),
            "last_name": last_raw,
            "name_suffix": _single_value(rows, fields.get("name_suffix")),
        }
    )
    full_raw = _single_value(rows, fields.get("full_name"))
    needs_split = full_raw.notna() & first_raw.isna() & last_raw.isna()
    if needs_split.any():
        split = std.parse_full_names(full_raw.where(needs_split))
        for column in names.columns:
            names[column] = names[column].astype(std.TEXT).mask(needs_split, split[column].astype(std.TEXT))
    cleaned = {column: std.clean_name(names[column]) for column in names.columns}

    updated_raw = _single_value(rows, source.updated_at)
    updated_formats = source.updated_at.format if source.updated_at else ()
    birth_spec = fields.get("birth_date")
    birth_raw = _single_value(rows, birth_spec)
    births = std.parse_birth_dates(birth_raw, birth_spec.format if birth_spec else ())
    gender_raw = _single_value(rows, fields.get("gender"))
    frame = person.assign(
        updated_at=std.parse_datetimes(updated_raw, updated_formats),
        updated_at_raw=updated_raw,
        **cleaned,
        first_name_norm=std.name_norm(cleaned["first_name"]),
        last_name_norm=std.name_norm(cleaned["last_name"]),
        first_name_raw=first_raw,
        last_name_raw=last_raw,
        full_name_raw=full_raw,
        birth_date=births["birth_date"],
        birth_date_raw=birth_raw,
        birth_date_valid=births["birth_date_valid"],
        gender=std.standardise_gender(gender_raw),
        gender_raw=gender_raw,
        loaded_at=loaded_at,
    )
    return frame.reindex(columns=columns_of(CANONICAL_MODELS["individual"]))


def _emails(rows: pd.DataFrame, source: SourceConfig, person: pd.DataFrame) -> pd.DataFrame:
    emails = _long(person, _each_value(rows, source.fields.get("email")), "email_raw")
    standard = std.standardise_emails(emails["email_raw"])
    return pd.concat([emails, standard], axis=1).reindex(columns=columns_of(CANONICAL_MODELS["contact_point_email"]))


def _phones(rows: pd.DataFrame, source: SourceConfig, person: pd.DataFrame) -> pd.DataFrame:
    phones = _long(person, _each_value(rows, source.fields.get("phone")), "phone_raw")
    standard = std.standardise_phones(phones["phone_raw"], source.default_country)
    standard.index = phones.index
    return pd.concat([phones, standard], axis=1).reindex(columns=columns_of(CANONICAL_MODELS["contact_point_phone"]))


_PART_FIELDS = ("address_line1", "address_line2", "city", "region", "postal_code", "country")


def _addresses(rows: pd.DataFrame, source: SourceConfig, person: pd.DataFrame) -> pd.DataFrame:
    fields = source.fields
    pieces: list[pd.DataFrame] = []
    mapped_parts = [name for name in _PART_FIELDS if name in fields and name != "country"]
    if mapped_parts:
        parts = pd.DataFrame({name: _single_value(rows, fields.get(name)) for name in _PART_FIELDS})
        present = parts[mapped_parts].notna().any(axis=1)
        parts = parts[present]
        raw = _joined(parts, tuple(_PART_FIELDS), ", ")
        labels = "+".join(c for name in mapped_parts for c in fields[name].columns)
        pieces.append(
            person[present].assign(
                source_column=labels,
                address_raw=raw,
                line1=parts["address_line1"],
                line2=parts["address_line2"],
                city=parts["city"],
                region=parts["region"],
                postal_code=parts["postal_code"],
                country=parts["country"],
                is_parsed=True,
            )
        )
    one_line = _long(person, _each_value(rows, fields.get("address")), "address_raw")
    if len(one_line):
        parsed = std.parse_one_line_addresses(one_line["address_raw"])
        parsed.index = one_line.index
        row_country = _single_value(rows, fields.get("country")).reindex(one_line[SOURCE_ROW]).to_numpy()
        parsed["country"] = parsed["country"].astype(std.TEXT).fillna(
            pd.Series(row_country, index=parsed.index, dtype="string")
        )
        pieces.append(pd.concat([one_line, parsed], axis=1))
    if not pieces:
        return _empty("contact_point_address")
    addresses = pd.concat(pieces, ignore_index=True)
    country = std.standardise_country(addresses["country"].astype(std.TEXT), source.default_country)
    return addresses.assign(
        line1=std.fold_address_line(addresses["line1"].astype(std.TEXT)),
        line2=std.fold_address_line(addresses["line2"].astype(std.TEXT)),
        city=std.standardise_city(addresses["city"].astype(std.TEXT)),
        region=std.standardise_region(addresses["region"].astype(std.TEXT)),
        postal_code=std.standardise_postal_code(addresses["postal_code"].astype(std.TEXT), country),
        country=country,
        is_parsed=addresses["is_parsed"].astype("boolean").fillna(False).astype(bool),
    ).reindex(columns=columns_of(CANONICAL_MODELS["contact_point_address"]))


def _identifiers(rows: pd.DataFrame, source: SourceConfig, person: pd.DataFrame) -> pd.DataFrame:
    pieces = []
    for identification_type, spec in source.identifiers.items():
        values = _long(person, _each_value(rows, spec), "identifier_raw")
        pieces.append(values.assign(identification_type=identification_type))
    if not pieces:
        return _empty("party_identification")
    identifiers = pd.concat(pieces, ignore_index=True)
    identifiers["identifier"] = std.standardise_identifiers(identifiers["identifier_raw"])
    identifiers = identifiers[identifiers["identifier"].notna()]
    return identifiers.reindex(columns=columns_of(CANONICAL_MODELS["party_identification"]))


def _engagement(
    rows: pd.DataFrame, source: SourceConfig, base: pd.DataFrame, record_id: pd.Series, loaded_at: dt.datetime
) -> pd.DataFrame:
    assert source.of is not None and source.person_id is not None
    fields = {name: _single_value(rows, spec) for name, spec in source.fields.items()}
    occurred_raw = _single_value(rows, source.occurred_at)
    occurred_formats = source.occurred_at.format if source.occurred_at else ()
    amount_raw = fields.get("amount", pd.Series(pd.NA, index=rows.index, dtype="string"))
    attributes = pd.DataFrame(fields, index=rows.index)
    attribute_json = (
        attributes.to_json(orient="records", lines=True, force_ascii=False).splitlines()
        if len(attributes.columns) and len(attributes)
        else [None] * len(rows)
    )
    missing = pd.Series(pd.NA, index=rows.index, dtype="string")
    frame = base.assign(
        engagement_id=record_id,
        person_source=source.of,
        person_record_id=std.blank_to_na(rows[source.person_id]),
        engagement_type=fields.get("type", missing).str.lower().fillna(source.name),
        occurred_at=std.parse_datetimes(occurred_raw, occurred_formats),
        occurred_at_raw=occurred_raw,
        amount=std.parse_amounts(amount_raw),
        amount_raw=amount_raw,
        currency=fields.get("currency", missing).str.upper(),
        channel=fields.get("channel", missing).str.lower(),
        status=fields.get("status", missing).str.lower(),
        attributes=pd.Series(attribute_json, index=rows.index, dtype="object"),
        loaded_at=loaded_at,
    )
    return frame.reindex(columns=columns_of(CANONICAL_MODELS["engagement"]))
