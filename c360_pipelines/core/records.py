"""Identity stage 0: the canonical tables reshaped for matching.

One row per source record (`records`, positional index 0..n-1, ordered by `record_key` so every run numbers
records the same way), plus long tables of the multi-valued fields (`emails`, `phones`, `identifiers`,
`addresses`) keyed by that position. Only usable values go in: valid emails and phones, parsed addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

RECORD_KEY_SEPARATOR = ":"


def record_key(source: pd.Series, source_record_id: pd.Series) -> pd.Series:
    return source.astype(str) + RECORD_KEY_SEPARATOR + source_record_id.astype(str)


@dataclass(frozen=True)
class RecordArrays:
    """The records' compared fields as numpy arrays, computed once per record set: comparing millions of pairs
    then gathers values by position instead of copying frames. Strings are "" where missing; codes are -1."""

    first_name: np.ndarray
    last_name: np.ndarray
    name_code_first: np.ndarray  # first and last names share one code space, so a swap compares codes
    name_code_last: np.ndarray
    first_name_count: np.ndarray  # how many records have this record's first name (0 where missing)
    last_name_count: np.ndarray
    birth: np.ndarray  # (n, 3) year, month, day; -1 where missing
    line1: np.ndarray
    line1_code: np.ndarray
    postal_code: np.ndarray
    postal_code_code: np.ndarray
    email: np.ndarray
    phone: np.ndarray
    identifier: np.ndarray
    identifier_kind: np.ndarray  # code of the identifier's type (the part before "="), -1 where none


def _strings(column: pd.Series) -> np.ndarray:
    return column.fillna("").astype(str).to_numpy(dtype=object)


def _codes(column: pd.Series) -> np.ndarray:
    return pd.factorize(column, use_na_sentinel=True)[0].astype("int64")


def _counts(codes: np.ndarray) -> np.ndarray:
    present = codes >= 0
    per_code = np.bincount(codes[present]) if present.any() else np.zeros(0, dtype="int64")
    return np.where(present, per_code[np.where(present, codes, 0)] if len(per_code) else 0, 0).astype("int64")


def record_arrays(records: pd.DataFrame) -> RecordArrays:
    names = pd.concat([records["first_name_norm"], records["last_name_norm"]], ignore_index=True)
    name_codes = _codes(names)
    first_codes, last_codes = name_codes[:len(records)], name_codes[len(records):]
    birth = pd.to_datetime(records["birth_date"], format="%Y-%m-%d")
    parts = np.stack([birth.dt.year, birth.dt.month, birth.dt.day], axis=1)
    parts = np.where(np.isnan(parts), -1, parts).astype("int64")
    return RecordArrays(
        first_name=_strings(records["first_name_norm"]), last_name=_strings(records["last_name_norm"]),
        name_code_first=first_codes, name_code_last=last_codes,
        first_name_count=_counts(first_codes), last_name_count=_counts(last_codes), birth=parts,
        line1=_strings(records["line1"]), line1_code=_codes(records["line1"]),
        postal_code=_strings(records["postal_code"]), postal_code_code=_codes(records["postal_code"]),
        email=_strings(records["email"]), phone=_strings(records["phone"]), identifier=_strings(records["identifier"]),
        identifier_kind=_codes(records["identifier"].str.split("=", n=1).str[0]),
    )


@dataclass
class MatchInput:
    records: pd.DataFrame
    emails: pd.DataFrame
    phones: pd.DataFrame
    identifiers: pd.DataFrame
    addresses: pd.DataFrame

    def __len__(self) -> int:
        return len(self.records)

    @cached_property
    def arrays(self) -> RecordArrays:
        return record_arrays(self.records)

    def with_values(self, emails: pd.DataFrame, phones: pd.DataFrame, identifiers: pd.DataFrame) -> MatchInput:
        """The same records with other contact values (the record arrays, already computed, carry over)."""
        replaced = MatchInput(self.records, emails, phones, identifiers, self.addresses)
        if "arrays" in self.__dict__:
            replaced.__dict__["arrays"] = self.__dict__["arrays"]
        return replaced


def build_match_input(
    individual: pd.DataFrame,
    emails: pd.DataFrame,
    phones: pd.DataFrame,
    addresses: pd.DataFrame,
    identifiers: pd.DataFrame,
) -> MatchInput:
    """Assemble matching input from frames of the canonical tables (columns as in the model)."""
    records = individual.assign(record_key=record_key(individual["source"], individual["source_record_id"]))
    records = records.sort_values("record_key", kind="stable").reset_index(drop=True)
    records["birth_date"] = pd.to_datetime(records["birth_date"], errors="coerce").dt.strftime("%Y-%m-%d")
    position = pd.Series(records.index, index=records["record_key"])

    def by_record(frame: pd.DataFrame, **values: str) -> pd.DataFrame:
        keys = record_key(frame["source"], frame["source_record_id"])
        located = frame.assign(rec=keys.map(position)).dropna(subset=["rec"])
        result = pd.DataFrame({"rec": located["rec"].astype("int64")})
        for name, column in values.items():
            result[name] = located[column].to_numpy()
        return result.dropna().drop_duplicates().reset_index(drop=True)

    valid_emails = emails[emails["is_valid"].astype(bool)]
    valid_phones = phones[phones["is_valid"].astype(bool)]
    typed = identifiers.assign(value=identifiers["identification_type"] + "=" + identifiers["identifier"])
    parsed = addresses[addresses["line1"].notna()]
    address_rows = by_record(parsed, line1="line1", postal_code="postal_code", city="city")
    first_address = address_rows.drop_duplicates("rec").set_index("rec")
    records["line1"] = first_address["line1"].reindex(records.index)
    records["postal_code"] = first_address["postal_code"].reindex(records.index)
    # House number and the first four letters of the street: survives a typo or a glued street type at the end
    # (12 COLEBATCH PL / 12 COLEBATCHPLACE), which a key on the whole line does not.
    records["street_start"] = records["line1"].str.extract(r"^(\S+ \S{1,4})", expand=False)
    records["birth_year"] = records["birth_date"].str[:4]
    records["first_initial"] = records["first_name_norm"].str[:1]
    records["last_initial"] = records["last_name_norm"].str[:1]
    # Names in either order, so a record with first and last name swapped meets its twin record.
    first, last = records["first_name_norm"], records["last_name_norm"]
    records["name_tokens"] = first.where(first <= last, last) + "|" + last.where(first <= last, first)
    email_rows = by_record(valid_emails, value="email_key")
    phone_rows = by_record(valid_phones, value="phone_e164")
    records["email"] = email_rows.drop_duplicates("rec").set_index("rec")["value"].reindex(records.index)
    records["phone"] = phone_rows.drop_duplicates("rec").set_index("rec")["value"].reindex(records.index)
    typed_rows = by_record(typed, value="value")
    records["identifier"] = typed_rows.drop_duplicates("rec").set_index("rec")["value"].reindex(records.index)
    return MatchInput(
        records=records,
        emails=email_rows,
        phones=phone_rows,
        identifiers=by_record(typed, value="value"),
        addresses=address_rows,
    )
