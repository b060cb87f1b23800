"""Large CRM-shaped CSV files for benchmarks, generated fast with numpy.

Values are realistic in their variety: nearly every email and phone is distinct, names and streets come
from large pools, and phones, emails, cases and addresses carry the same formatting noise as the demo, so the
per-distinct-value caches in staging get no more help than real data gives them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from faker import Faker

HEADER = ["Id", "FirstName", "LastName", "Email", "Phone", "MailingStreet", "MailingCity", "MailingState",
          "MailingPostalCode", "Birthdate", "LastModifiedDate"]


def write_crm_csv(path: Path, rows: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    firsts = np.array(sorted({fake.first_name() for _ in range(3000)}))
    lasts = np.array(sorted({fake.last_name() for _ in range(5000)}))
    streets = np.array(sorted({fake.street_name() for _ in range(5000)}))
    places = [(fake.city(), fake.state_abbr(include_territories=False), fake.postcode()) for _ in range(3000)]
    cities = np.array([p[0] for p in places])
    states = np.array([p[1] for p in places])
    zips = np.array([p[2] for p in places])

    first = firsts[rng.integers(0, len(firsts), rows)]
    last = lasts[rng.integers(0, len(lasts), rows)]
    place = rng.integers(0, len(places), rows)
    area = rng.choice(np.array([201, 212, 305, 312, 415, 512, 617, 646, 702, 773, 818, 917]), rows)
    exchange = rng.integers(200, 1000, rows)
    line = rng.integers(0, 10000, rows)
    style = rng.integers(0, 4, rows)
    phone = pd.Series(
        np.where(
            style == 0, [f"({a}) {e}-{n:04d}" for a, e, n in zip(area, exchange, line, strict=True)],
            np.where(style == 1, [f"{a}.{e}.{n:04d}" for a, e, n in zip(area, exchange, line, strict=True)],
                     np.where(style == 2, [f"+1 {a} {e} {n:04d}" for a, e, n in zip(area, exchange, line, strict=True)],
                              [f"{a}{e}{n:04d}" for a, e, n in zip(area, exchange, line, strict=True)])))
    )
    domains = np.array(["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com"])
    email = pd.Series(first).str.lower() + "." + pd.Series(last).str.lower() + rng.integers(1, 100000, rows).astype(str) \
        + "@" + domains[rng.integers(0, len(domains), rows)]
    upper = rng.random(rows) < 0.05
    email = email.where(~upper, email.str.upper())
    frame = pd.DataFrame({
        "Id": [f"003{i:09d}" for i in range(rows)],
        "FirstName": first,
        "LastName": last,
        "Email": email,
        "Phone": phone,
        "MailingStreet": [f"{n} {s}" for n, s in zip(rng.integers(1, 10000, rows), streets[rng.integers(0, len(streets), rows)], strict=True)],
        "MailingCity": cities[place],
        "MailingState": states[place],
        "MailingPostalCode": zips[place],
        "Birthdate": pd.to_datetime(rng.integers(-15000, 12000, rows), unit="D").strftime("%Y-%m-%d"),
        "LastModifiedDate": pd.to_datetime(1_700_000_000 + rng.integers(0, 30_000_000, rows), unit="s").strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


CRM_CONFIG = """\
warehouse: {warehouse}
sources:
  - name: crm
    path: data/crm.csv
    id: Id
    updated_at: LastModifiedDate
    fields:
      first_name: FirstName
      last_name: LastName
      email: Email
      phone: Phone
      address_line1: MailingStreet
      city: MailingCity
      region: MailingState
      postal_code: MailingPostalCode
      country: {{value: US}}
      birth_date: {{column: Birthdate, format: "%Y-%m-%d"}}
"""
