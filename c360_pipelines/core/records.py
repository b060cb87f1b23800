"""Identity stage 0: the canonical tables reshaped for matching.

One row per source record (`records`, positional index 0..n-1, ordered by `record_key` so every run numbers
records the same way), plus long tables of the multi-valued fields (`emails`, `phones`, `identifiers`,
`addresses`) keyed by that position. Only usable values go in: valid emails and phones, parsed addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

RECORD_KEY_SEPARATOR = ":"


def record_key(source: pd.Series, source_record_id: pd.Series) -> pd.Series:
    return source.astype(str) + RECORD_KEY_SEPARATOR + source_record_id.astype(str)


@dataclass
class MatchInput:
    records: pd.DataFrame
    emails: pd.DataFrame
    phones: pd.DataFrame
    identifiers: pd.DataFrame
    addresses: pd.DataFrame

    def __len__(self) -> int:
        return len(self.records)


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
