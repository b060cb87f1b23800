"""The read side of the single customer view: profiles, universal ID lookup, search, records, timeline.

Every read is a handful of indexed queries (by 360 ID, by source key, by email key, E.164 phone or folded name)
through plain SQLAlchemy Core, so that a lookup stays a few milliseconds on SQLite and PostgreSQL and never
loads a table. The API and the Customer 360 page both read through `Customer360`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from c360_pipelines.config import C360Config
from c360_pipelines.core.insights import insight_values, parse_insights
from c360_pipelines.core.standardise import fold_name, standardise_email_key, standardise_phone
from c360_pipelines.model import TABLES
from resources.warehouse import WarehouseResource

C360_ID_PATTERN = re.compile(r"^c360_[0-9a-f]{16}$")
MAX_MERGE_HOPS = 64
SEARCH_LIMIT = 20
T = TABLES
T_ = TypeVar("T_")


class NotFound(LookupError):
    """Nothing is known under that key."""


class BadRequest(ValueError):
    """The request cannot be answered as asked (a malformed ID, an unknown source, no search criteria)."""


@dataclass(frozen=True)
class Resolved:
    c360_id: str
    requested_id: str
    chain: list[str]

    @property
    def redirected(self) -> bool:
        return self.c360_id != self.requested_id


def _one_connection(method: Callable[..., T_]) -> Callable[..., T_]:
    """Run a public read in one request-scoped connection."""
    @functools.wraps(method)
    def wrapper(self: Customer360, *args: Any, **kwargs: Any) -> T_:
        with self._session():
            return method(self, *args, **kwargs)
    return wrapper


class Customer360:
    """Reads one project's warehouse for the API and the web page."""

    def __init__(self, config: C360Config) -> None:
        self.config = config
        self.warehouse = WarehouseResource(url=config.warehouse)
        self.insights = parse_insights(config.profile.all_insights)
        self.person_sources = {s.name: s for s in config.person_sources}
        self.default_region = config.person_sources[0].default_country if config.person_sources else "US"
        self.queries = _Queries()
        self._local = threading.local()

    @contextmanager
    def _session(self) -> Iterator[sa.Connection]:
        """One pooled connection for all the queries of one request (a checkout costs a round trip on PostgreSQL)."""
        current = getattr(self._local, "connection", None)
        if current is not None:
            yield current
            return
        with self.warehouse.engine.connect() as connection:
            self._local.connection = connection
            try:
                yield connection
            finally:
                self._local.connection = None

    def _rows(self, statement: sa.Executable, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._session() as connection:
            return [dict(row) for row in connection.execute(statement, params or {}).mappings()]

    # ------------------------------------------------------------------------------------ identity

    def resolve(self, c360_id: str) -> Resolved:
        """The active ID behind `c360_id`, following merges; BadRequest for a malformed ID, NotFound otherwise."""
        if not C360_ID_PATTERN.fullmatch(c360_id):
            raise BadRequest(f"'{c360_id[:80]}' is not a 360 ID (c360_ followed by 16 hex digits)")
        chain, current = [], c360_id
        for _ in range(MAX_MERGE_HOPS):
            found = self._rows(self.queries.id_status, {"id": current})
            if not found:
                break
            chain.append(current)
            if found[0]["status"] == "active":
                return Resolved(current, c360_id, chain)
            if not found[0]["merged_into"] or found[0]["merged_into"] in chain:
                break
            current = found[0]["merged_into"]
        raise NotFound(f"no person with 360 ID {c360_id}")

    @_one_connection
    def lookup(self, source: str, source_record_id: str) -> dict[str, Any]:
        """Universal ID lookup: the 360 ID of a source record, and its person's profile."""
        if source not in self.person_sources:
            raise NotFound(f"unknown source '{source[:80]}'; person sources: {', '.join(sorted(self.person_sources))}")
        found = self._rows(self.queries.xref_by_key, {"source": source, "id": source_record_id})
        if not found:
            raise NotFound(f"no record {source}:{source_record_id[:80]}")
        return {"source": source, "source_record_id": source_record_id, **self.profile(found[0]["c360_id"])}

    # ------------------------------------------------------------------------------------- profile

    @_one_connection
    def profile(self, c360_id: str) -> dict[str, Any]:
        """Golden profile, contact points, provenance and insights; a merged ID answers with its survivor."""
        resolved = self.resolve(c360_id)
        key = resolved.c360_id
        q = self.queries
        with self._session() as connection:
            def rows(statement: sa.Executable) -> list[dict[str, Any]]:
                return [dict(row) for row in connection.execute(statement, {"id": key}).mappings()]

            golden = rows(q.golden)
            contact_points = rows(q.contact_points)
            why = rows(q.provenance)
            insight_rows = rows(q.insights)
        if not golden:
            raise NotFound(f"no profile for {key} yet (profiles are built after identity)")
        profile = {k: _plain(v) for k, v in golden[0].items()
                   if k not in ("profile_hash", "first_name_norm", "last_name_norm")}
        return {
            "c360_id": key,
            "requested_id": resolved.requested_id,
            "redirected": resolved.redirected,
            "merged_from": resolved.chain[:-1],
            "profile": profile,
            "contact_points": [{k: _plain(v) for k, v in p.items() if k != "c360_id"} for p in contact_points],
            "provenance": {p["attribute"]: {"value": p["value"], "source": p["source"],
                                            "source_record_id": p["source_record_id"], "rule": p["rule"],
                                            "candidates": p["candidates"], "competing": json.loads(p["competing"])}
                           for p in why},
            "insights": insight_values(insight_rows, self.insights),
        }

    @_one_connection
    def records(self, c360_id: str) -> dict[str, Any]:
        """Every source record linked to the person, with its values and the link evidence."""
        resolved = self.resolve(c360_id)
        xref, individual = T["xref"], T["individual"]
        rows = self._rows(
            sa.select(xref.c.source, xref.c.source_record_id, xref.c.evidence, individual.c.first_name,
                      individual.c.middle_name, individual.c.last_name, individual.c.birth_date,
                      individual.c.updated_at, individual.c.batch_id)
            .join(individual, sa.and_(individual.c.source == xref.c.source,
                                      individual.c.source_record_id == xref.c.source_record_id))
            .where(xref.c.c360_id == resolved.c360_id)
            .order_by(xref.c.source, xref.c.source_record_id))
        contacts = self._record_contacts(resolved.c360_id)
        records = []
        for row in rows:
            key = (row["source"], row["source_record_id"])
            evidence = row.pop("evidence")
            records.append({**{k: _plain(v) for k, v in row.items()}, **contacts.get(key, {}),
                            "evidence": json.loads(evidence) if evidence and evidence.startswith(("{", "[", '"'))
                            else evidence})
        return {"c360_id": resolved.c360_id, "redirected": resolved.redirected, "records": records}

    def _record_contacts(self, c360_id: str) -> dict[tuple[str, str], dict[str, list[str]]]:
        xref = T["xref"]
        found: dict[tuple[str, str], dict[str, list[str]]] = {}
        for kind, table, column in (("emails", "contact_point_email", "email_raw"),
                                    ("phones", "contact_point_phone", "phone_raw"),
                                    ("addresses", "contact_point_address", "address_raw")):
            points = T[table]
            rows = self._rows(sa.select(points.c.source, points.c.source_record_id, points.c[column])
                              .join(xref, sa.and_(xref.c.source == points.c.source,
                                                  xref.c.source_record_id == points.c.source_record_id))
                              .where(xref.c.c360_id == c360_id))
            for row in rows:
                key = (row["source"], row["source_record_id"])
                found.setdefault(key, {}).setdefault(kind, []).append(row[column])
        return found

    @_one_connection
    def timeline(self, c360_id: str, page: int = 1, page_size: int = 25) -> dict[str, Any]:
        """Engagement rows (orders, tickets) and profile events, newest first, a page at a time."""
        resolved = self.resolve(c360_id)
        wanted = page * page_size
        xref, engagement, events = T["xref"], T["engagement"], T["events"]
        interactions = self._rows(
            sa.select(engagement.c.source, engagement.c.engagement_id, engagement.c.engagement_type,
                      engagement.c.occurred_at, engagement.c.amount, engagement.c.currency, engagement.c.status,
                      engagement.c.channel, engagement.c.attributes)
            .join(xref, sa.and_(xref.c.source == engagement.c.person_source,
                                xref.c.source_record_id == engagement.c.person_record_id))
            .where(xref.c.c360_id == resolved.c360_id)
            .order_by(engagement.c.occurred_at.desc()).limit(wanted))
        changes = self._rows(sa.select(events.c.seq, events.c.type, events.c.time, events.c.data)
                             .where(events.c.subject.in_(resolved.chain))
                             .order_by(events.c.seq.desc()).limit(wanted))
        items = [{"kind": "engagement", "at": _plain(r["occurred_at"]), "type": r["engagement_type"],
                  "source": r["source"], "id": r["engagement_id"], "amount": r["amount"], "currency": r["currency"],
                  "status": r["status"], "channel": r["channel"],
                  "attributes": json.loads(r["attributes"]) if r["attributes"] else {}} for r in interactions]
        items += [{"kind": "event", "at": _plain(r["time"]), "type": r["type"], "seq": r["seq"],
                   "data": _event_summary(json.loads(r["data"]))} for r in changes]
        items.sort(key=lambda item: (item["at"] or ""), reverse=True)
        start = (page - 1) * page_size
        return {"c360_id": resolved.c360_id, "page": page, "page_size": page_size,
                "items": items[start:start + page_size], "has_more": len(items) > start + page_size}

    @_one_connection
    def merge_history(self, c360_id: str) -> list[dict[str, Any]]:
        """What identity did to this person's ID: created, absorbed other IDs, split; oldest first."""
        resolved = self.resolve(c360_id)
        changes, ids = T["id_change"], T["ids"]
        history = self._rows(sa.select(changes).where(changes.c.c360_id.in_(resolved.chain))
                             .order_by(changes.c.changed_at))
        absorbed = self._rows(sa.select(ids.c.c360_id, ids.c.first_seen, ids.c.last_changed)
                              .where(ids.c.merged_into == resolved.c360_id))
        return ([{k: _plain(v) for k, v in row.items()} for row in history]
                + [{"changed_at": _plain(row["last_changed"]), "c360_id": row["c360_id"], "change": "merged_into",
                    "related": resolved.c360_id} for row in absorbed])

    # -------------------------------------------------------------------------------------- search

    @_one_connection
    def search(self, email: str | None = None, phone: str | None = None, name: str | None = None,
               postal_code: str | None = None) -> dict[str, Any]:
        """Candidates ranked by how many of the criteria they meet; the query is standardised like source data."""
        if not any((email, phone, name, postal_code)):
            raise BadRequest("give at least one of email, phone, name, postal_code")
        scores: dict[str, float] = {}
        matched: dict[str, list[str]] = {}
        understood: dict[str, str | None] = {}

        def add(ids: list[str], criterion: str, weight: float) -> None:
            for c360_id in ids:
                scores[c360_id] = scores.get(c360_id, 0.0) + weight
                matched.setdefault(c360_id, []).append(criterion)

        if email:
            understood["email"] = standardise_email_key(email)
            if understood["email"]:
                add(self._ids_by_point("email", understood["email"]), "email", 3.0)
        if phone:
            understood["phone"] = standardise_phone(phone, self.default_region)
            if understood["phone"]:
                add(self._ids_by_point("phone", understood["phone"]), "phone", 3.0)
        golden = T["golden_profile"]
        if name:
            parts = [p for p in re.split(r"[\s,]+", name.strip()) if p]
            folded = [f for f in map(fold_name, parts) if f]
            understood["name"] = " ".join(folded) or None
            if folded:
                last, first = folded[-1], (folded[0] if len(folded) > 1 else None)
                query = sa.select(golden.c.c360_id).where(golden.c.last_name_norm == last)
                if first:
                    query = query.where(golden.c.first_name_norm == first)
                add([r["c360_id"] for r in self._rows(query.limit(200))], "name", 2.0 if first else 1.0)
                if first and len(folded) == 2:  # "Smith Ann" or "Smith, Ann"
                    swapped = sa.select(golden.c.c360_id).where(golden.c.last_name_norm == folded[0],
                                                                 golden.c.first_name_norm == folded[-1])
                    add([r["c360_id"] for r in self._rows(swapped.limit(200))], "name", 2.0)
        if postal_code:
            understood["postal_code"] = postal_code.strip().upper()
            if len(scores) or not (email or phone or name):
                query = sa.select(golden.c.c360_id).where(golden.c.postal_code == understood["postal_code"])
                if scores:
                    query = query.where(golden.c.c360_id.in_(list(scores)))
                add([r["c360_id"] for r in self._rows(query.limit(200))], "postal_code", 1.0)
        ranked = sorted(scores, key=lambda c: (-scores[c], c))[:SEARCH_LIMIT]
        summaries = {r["c360_id"]: r for r in self._rows(
            sa.select(golden.c.c360_id, golden.c.full_name, golden.c.email, golden.c.phone, golden.c.city,
                      golden.c.region, golden.c.postal_code, golden.c.sources, golden.c.record_count)
            .where(golden.c.c360_id.in_(ranked)))} if ranked else {}
        return {"query": understood, "candidates": [
            {**{k: _plain(v) for k, v in summaries[c].items()}, "score": scores[c], "matched": matched[c]}
            for c in ranked if c in summaries]}

    def _ids_by_point(self, kind: str, key: str) -> list[str]:
        return [r["c360_id"] for r in self._rows(self.queries.ids_by_point, {"kind": kind, "key": key})]


class _Queries:
    """The hot statements, built once: SQLAlchemy then reuses their compiled form on every request."""

    def __init__(self) -> None:
        ids, xref, points = T["ids"], T["xref"], T["profile_contact_points"]
        provenance, stored, golden = T["profile_attribute_provenance"], T["profile_insights"], T["golden_profile"]
        by_id = sa.bindparam("id")
        self.id_status = sa.select(ids.c.status, ids.c.merged_into).where(ids.c.c360_id == by_id)
        self.xref_by_key = sa.select(xref.c.c360_id).where(xref.c.source == sa.bindparam("source"),
                                                           xref.c.source_record_id == by_id)
        self.golden = sa.select(golden).where(golden.c.c360_id == by_id)
        self.contact_points = (sa.select(points).where(points.c.c360_id == by_id)
                               .order_by(points.c.kind, points.c.is_primary.desc(), points.c.value))
        self.provenance = sa.select(provenance).where(provenance.c.c360_id == by_id).order_by(provenance.c.attribute)
        self.insights = sa.select(stored.c.insight, stored.c.value, stored.c.number).where(stored.c.c360_id == by_id)
        self.ids_by_point = (sa.select(points.c.c360_id).where(points.c.kind == sa.bindparam("kind"),
                                                              points.c.value_key == sa.bindparam("key"))
                             .distinct().limit(200))


def _event_summary(data: dict[str, Any]) -> dict[str, Any]:
    """Event data for the timeline, without the full profile copy."""
    return {k: v for k, v in data.items() if k != "profile"}


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
