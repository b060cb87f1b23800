"""A seeded, realistic four-system customer data set: the demo, and what tests and benchmarks run on.

`write_demo(out_dir, people=N, seed=S)` writes:

- `data/crm/contacts_1.csv` and `contacts_2.csv` (a later export: people who moved, changed email, edits),
- `data/shop/customers.jsonl` (one-field names, one-line addresses) and `data/shop/orders.csv`,
- `data/support/tickets.csv` (every ticket carries its requester: each row is a person record),
- `data/loyalty/members.csv` (Windows-1252 encoded, day-first birth dates, split street columns),
- `truth.csv` (source, source_record_id, person_id) and `people.csv` (each person's current true values),
- `c360.yaml`, the config that maps all of it.

The noise is the kind real systems have: typos, nicknames, case and spacing, phone formats, address
abbreviations, moves and changed emails; and the hard cases that fool naive matchers: households sharing an
address and landline, twins, a family sharing one email, common names, and junk placeholders
(`noemail@example.com`, `000-000-0000`) typed for many unrelated people.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from faker import Faker

from c360_pipelines.core.standardise import standardise_email_key

NICKNAMES = {
    "Robert": ["Bob", "Rob", "Bobby"], "William": ["Bill", "Will", "Billy"], "Elizabeth": ["Liz", "Beth", "Betty"],
    "Katherine": ["Kate", "Katie", "Kathy"], "Michael": ["Mike", "Mikey"], "James": ["Jim", "Jimmy", "Jamie"],
    "Jennifer": ["Jen", "Jenny"], "Christopher": ["Chris"], "Margaret": ["Peggy", "Maggie", "Meg"],
    "Richard": ["Rick", "Dick", "Rich"], "Thomas": ["Tom", "Tommy"], "Joseph": ["Joe", "Joey"],
    "Daniel": ["Dan", "Danny"], "Matthew": ["Matt"], "Anthony": ["Tony"], "Patricia": ["Pat", "Patty", "Trish"],
    "Susan": ["Sue", "Suzy"], "Jessica": ["Jess"], "Deborah": ["Debbie", "Deb"], "Steven": ["Steve"],
    "Andrew": ["Andy", "Drew"], "Joshua": ["Josh"], "Benjamin": ["Ben"], "Samuel": ["Sam"], "Alexander": ["Alex"],
    "Nicholas": ["Nick"], "Jonathan": ["Jon"], "Timothy": ["Tim"], "Edward": ["Ed", "Ted"], "Charles": ["Charlie", "Chuck"],
    "Rebecca": ["Becky"], "Victoria": ["Vicky", "Tori"], "Kimberly": ["Kim"], "Christine": ["Chris", "Tina"],
}
COMMON_NAMES = [("John", "Smith", "M"), ("Maria", "Garcia", "F"), ("Michael", "Johnson", "M"), ("Mary", "Williams", "F")]
JUNK_EMAILS = ["noemail@example.com", "none@none.com", "na@na.com", "test@test.com"]
JUNK_PHONES = ["000-000-0000", "555-555-5555", "999-999-9999", "123-456-7890"]
STREET_SUFFIXES = {"Street": "St", "Avenue": "Ave", "Road": "Rd", "Drive": "Dr", "Lane": "Ln", "Boulevard": "Blvd",
                   "Court": "Ct", "Place": "Pl", "Terrace": "Ter", "Way": "Way"}
EMAIL_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com", "proton.me"]


@dataclass
class Address:
    number: str
    street: str
    suffix: str
    unit: str
    city: str
    state: str
    zip: str

    def line1(self, abbreviated: bool = False) -> str:
        suffix = STREET_SUFFIXES[self.suffix] if abbreviated else self.suffix
        return f"{self.number} {self.street} {suffix}"


@dataclass
class Person:
    person_id: str
    first: str
    last: str
    gender: str
    birth: str  # ISO date
    email: str
    mobile: str
    landline: str
    address: Address
    moved_to: Address | None = None
    new_email: str | None = None
    tags: list[str] = field(default_factory=list)


class _Noise:
    """Realistic data-entry noise, from one seeded random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def maybe(self, p: float) -> bool:
        return self.rng.random() < p

    def typo(self, text: str) -> str:
        if len(text) < 4:
            return text
        i = self.rng.randrange(1, len(text) - 1)
        kind = self.rng.choice(["swap", "drop", "double", "replace"])
        if kind == "swap":
            return text[:i] + text[i + 1] + text[i] + text[i + 2:]
        if kind == "drop":
            return text[:i] + text[i + 1:]
        if kind == "double":
            return text[:i] + text[i] + text[i:]
        return text[:i] + self.rng.choice("aeiourstnl") + text[i + 1:]

    def case(self, text: str) -> str:
        roll = self.rng.random()
        return text.upper() if roll < 0.08 else text.lower() if roll < 0.14 else text

    def first_name(self, name: str) -> str:
        if name in NICKNAMES and self.maybe(0.25):
            return self.rng.choice(NICKNAMES[name])
        return self.case(self.typo(name) if self.maybe(0.04) else name)

    def last_name(self, name: str) -> str:
        return self.case(self.typo(name) if self.maybe(0.04) else name)

    def phone(self, digits: str) -> str:
        if not digits or digits in JUNK_PHONES:
            return digits
        a, b, c = digits[:3], digits[3:6], digits[6:]
        return self.rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"{a}{b}{c}",
                                f"1-{a}-{b}-{c}"])

    def email(self, email: str) -> str:
        if self.maybe(0.03):
            local, domain = email.split("@")
            email = f"{self.typo(local)}@{domain}"
        return email.upper() if self.maybe(0.05) else f" {email}" if self.maybe(0.03) else email


def _make_pools(fake: Faker, rng: random.Random, size: int) -> dict[str, list]:
    cities = []
    for _ in range(max(50, size // 40)):
        cities.append((fake.city(), fake.state_abbr(include_territories=False), fake.postcode()))
    return {
        "female": sorted({fake.first_name_female() for _ in range(600)} | {"Zoë", "Renée", "Chloé", "Noémie", "Inés"}),
        "male": sorted({fake.first_name_male() for _ in range(600)} | {"José", "André", "François", "Jürgen", "Søren"}),
        "last": sorted({fake.last_name() for _ in range(2500)} | {"Muñoz", "Gómez", "Müller", "Nuñez", "O'Brien"}),
        "street": sorted({fake.street_name().rsplit(" ", 1)[0] for _ in range(1500)}),
        "cities": cities,
    }


def _address(rng: random.Random, pools: dict[str, list]) -> Address:
    city, state, zipcode = rng.choice(pools["cities"])
    unit = f"Apt {rng.randint(1, 40)}" if rng.random() < 0.2 else ""
    return Address(str(rng.randint(1, 9999)), rng.choice(pools["street"]), rng.choice(list(STREET_SUFFIXES)),
                   unit, city, state, zipcode)


def _phone(rng: random.Random) -> str:
    return f"{rng.choice([201, 212, 305, 312, 415, 512, 617, 646, 702, 773, 818, 917])}{rng.randint(200, 999)}{rng.randint(1000, 9999)}"


def _email(rng: random.Random, first: str, last: str, used: set[str]) -> str:
    for attempt in range(1000):
        local = rng.choice([f"{first}.{last}", f"{first}{last}", f"{first[0]}{last}", f"{first}.{last}{rng.randint(1, 99)}",
                            f"{last}.{first}", f"{first}{rng.randint(1950, 2005)}"]).lower().replace("'", "").replace(" ", "")
        if attempt >= 10:  # a common name has used up its short addresses: add a longer number, as people do
            local = f"{local}{rng.randint(100, 999_999)}"
        email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
        if _claimed(email, used):
            return email
    raise RuntimeError(f"could not find an unused email address for {first} {last}")


def _claimed(email: str, used: set[str]) -> bool:
    """Take `email`'s inbox unless someone has it already (Gmail ignores dots: john.smith@ and johnsmith@ are one)."""
    mailbox = standardise_email_key(email) or email
    if mailbox in used:
        return False
    used.add(mailbox)
    return True


def _family_email(rng: random.Random, last: str, used: set[str]) -> str:
    """A household's shared address (thesmiths42@...), not one another family or person already has."""
    for attempt in range(1000):
        number = rng.randint(1, 99) if attempt < 10 else rng.randint(100, 999_999)  # a busy surname: a longer one
        email = f"the{last.lower().replace(' ', '')}s{number}@{rng.choice(EMAIL_DOMAINS)}"
        if _claimed(email, used):
            return email
    raise RuntimeError(f"could not find an unused family email address for the {last} household")


# Ages are counted on this day, not today: Faker's date_of_birth counts back from today, so the same seed gave
# other people from one day to the next (and a default model that no longer matched the one shipped).
REFERENCE_DAY = dt.date(2025, 1, 1)


def _birth_date(fake: Faker, youngest: int, oldest: int) -> str:
    """A birth date of someone between `youngest` and `oldest` years old on REFERENCE_DAY, as ISO text."""
    latest = REFERENCE_DAY.replace(year=REFERENCE_DAY.year - youngest)
    earliest = REFERENCE_DAY.replace(year=REFERENCE_DAY.year - oldest - 1) + dt.timedelta(days=1)
    return fake.date_between_dates(earliest, latest).isoformat()


def generate_people(count: int, seed: int) -> list[Person]:
    """The true population: individuals, households, twins and namesakes, each with a stable person_id."""
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)
    pools = _make_pools(fake, rng, count)
    used_emails: set[str] = set()
    people: list[Person] = []

    def new_person(first: str, last: str, gender: str, address: Address, birth: str | None = None,
                   landline: str = "", tags: list[str] | None = None) -> Person:
        birth = birth or _birth_date(fake, youngest=18, oldest=90)
        person = Person(f"P{len(people) + 1:07d}", first, last, gender, birth, _email(rng, first, last, used_emails),
                        _phone(rng), landline, address, tags=list(tags or []))
        if rng.random() < 0.08:
            person.moved_to = _address(rng, pools)
        if rng.random() < 0.06:
            person.new_email = _email(rng, first, last, used_emails)
        people.append(person)
        return person

    female = set(pools["female"])
    formal_names = {g: [n for n in NICKNAMES if (n in female) == (g == "F")] or list(NICKNAMES) for g in "FM"}

    def random_first(gender: str) -> str:
        if rng.random() < 0.15:
            return rng.choice(formal_names[gender])
        return rng.choice(pools["female"] if gender == "F" else pools["male"])

    while len(people) < count:
        roll = rng.random()
        gender = rng.choice("FM")
        if roll < 0.10 and count - len(people) >= 3:  # a household: shared address, landline, often a family email
            last, address, landline = rng.choice(pools["last"]), _address(rng, pools), _phone(rng)
            members = [new_person(random_first(g), last, g, address, landline=landline, tags=["household"])
                       for g in rng.choices("FM", k=rng.randint(2, 4))]
            if rng.random() < 0.5:
                family = _family_email(rng, last, used_emails)
                for member in members:
                    member.email, member.tags = family, [*member.tags, "shared_email"]
        elif roll < 0.13 and count - len(people) >= 2:  # twins: same surname, birth date and home
            last, address = rng.choice(pools["last"]), _address(rng, pools)
            birth = _birth_date(fake, youngest=18, oldest=60)
            for g in rng.choices("FM", k=2):
                new_person(random_first(g), last, g, address, birth=birth, tags=["twin"])
        elif roll < 0.16:  # a namesake of many others
            first, last, g = rng.choice(COMMON_NAMES)
            new_person(first, last, g, _address(rng, pools), tags=["common_name"])
        else:
            new_person(random_first(gender), rng.choice(pools["last"]), gender, _address(rng, pools))
    return people[:count]


# ------------------------------------------------------------------------------------------ sources


@dataclass
class _Writer:
    noise: _Noise
    truth: list[tuple[str, str, str]] = field(default_factory=list)

    def record(self, source: str, record_id: str, person: Person) -> None:
        self.truth.append((source, record_id, person.person_id))

    def junk_email(self, email: str) -> str:
        return self.noise.rng.choice(JUNK_EMAILS) if self.noise.maybe(0.02) else self.noise.email(email)

    def junk_phone(self, digits: str) -> str:
        return self.noise.rng.choice(JUNK_PHONES) if self.noise.maybe(0.02) else self.noise.phone(digits)


def _crm(people: list[Person], w: _Writer, out: Path) -> None:
    header = ["Id", "FirstName", "LastName", "Email", "Phone", "MailingStreet", "MailingCity", "MailingState",
              "MailingPostalCode", "Birthdate", "LastModifiedDate"]
    first_rows, second_rows = [], []
    rng = w.noise.rng
    for index, person in enumerate(people):
        record_id = f"003{index:09d}"
        address = person.address
        street = address.line1(abbreviated=rng.random() < 0.5) + (f" {address.unit}" if address.unit else "")
        row = [record_id, w.noise.first_name(person.first), w.noise.last_name(person.last), w.junk_email(person.email),
               w.junk_phone(person.mobile if rng.random() < 0.7 else person.landline or person.mobile),
               street, address.city, address.state if rng.random() < 0.9 else address.state.lower(),
               address.zip, person.birth if rng.random() < 0.85 else "", f"2024-{rng.randint(1, 6):02d}-{rng.randint(1, 28):02d}T10:00:00Z"]
        first_rows.append(row)
        w.record("crm", record_id, person)
        if person.moved_to or person.new_email:
            moved = person.moved_to or address
            update = list(row)
            update[3] = person.new_email or row[3]
            moved_street = moved.line1(True) + (f" {moved.unit}" if moved.unit else "")
            update[5], update[6], update[7], update[8] = moved_street, moved.city, moved.state, moved.zip
            update[10] = f"2024-{rng.randint(7, 12):02d}-{rng.randint(1, 28):02d}T09:30:00Z"
            second_rows.append(update)
    _write_csv(out / "crm" / "contacts_1.csv", header, first_rows)
    _write_csv(out / "crm" / "contacts_2.csv", header, second_rows)


def _shop(people: list[Person], w: _Writer, out: Path) -> None:
    rng = w.noise.rng
    customers, orders = [], []
    for index, person in enumerate(people):
        record_id = f"C{100000 + index}"
        address = person.moved_to or person.address
        line = f"{address.line1(rng.random() < 0.7)}{', ' + address.unit if address.unit else ''}, {address.city}, {address.state} {address.zip}"
        first = w.noise.first_name(person.first)
        name = f"{first} {w.noise.last_name(person.last)}" if rng.random() < 0.8 else f"{person.last}, {first}"
        customers.append({"customer_id": record_id, "name": name, "email": w.junk_email(person.new_email or person.email),
                          "phone": w.junk_phone(person.mobile) if rng.random() < 0.8 else None,
                          "shipping_address": line, "marketing_opt_in": rng.random() < 0.4,
                          "updated_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 12:00:00"})
        w.record("shop", record_id, person)
        for _ in range(rng.choices([0, 1, 2, 3, 5], weights=[2, 4, 3, 2, 1])[0]):
            orders.append([f"O{len(orders) + 1:08d}", record_id, f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(8, 22):02d}:15:00",
                           f"{rng.uniform(5, 400):.2f}", "USD", rng.choice(["paid", "shipped", "refunded"])])
    (out / "shop").mkdir(parents=True, exist_ok=True)
    with open(out / "shop" / "customers.jsonl", "w", encoding="utf-8") as handle:
        for index, customer in enumerate(customers):
            handle.write(json.dumps(customer) + "\n")
            if index == len(customers) // 2:
                handle.write('{"customer_id": "C-TRUNCATED", "name": "Half a li\n')  # a line cut off mid-write
    _write_csv(out / "shop" / "orders.csv", ["order_id", "customer_id", "ordered_at", "total_amount", "currency", "status"], orders)


def _support(people: list[Person], w: _Writer, out: Path) -> None:
    rng = w.noise.rng
    rows = []
    subjects = ["Where is my order?", "Refund request", "Cannot log in", "Change my address", "Damaged item",
                "Question about loyalty points", "Cancel subscription"]
    for person in people:
        for _ in range(rng.randint(1, 3)):
            ticket_id = f"T{len(rows) + 1:07d}"
            name = f"{w.noise.first_name(person.first)} {w.noise.last_name(person.last)}"
            phone = w.junk_phone(person.mobile) if rng.random() < 0.5 else ""
            rows.append([ticket_id, name, w.junk_email(person.new_email or person.email), phone, rng.choice(subjects),
                         rng.choice(["open", "closed", "closed", "pending"]),
                         f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(8, 20):02d}:00:00"])
            w.record("support", ticket_id, person)
    # What real exports contain too: a ticket without its key, and a row broken by an unquoted comma.
    rows.append(["", "Unknown Caller", "", "", "Voicemail with no ticket number", "open", "2024-03-03T10:00:00"])
    rows.append(["T9999999", "Broken, Row", "x@example.org", "", "Subject, with comma", "open", "2024-03-04T10:00:00", "extra"])
    _write_csv(out / "support" / "tickets.csv",
               ["ticket_id", "requester_name", "requester_email", "requester_phone", "subject", "status", "created_at"], rows)


def _loyalty(people: list[Person], w: _Writer, out: Path) -> None:
    rng = w.noise.rng
    rows = []
    for index, person in enumerate(people):
        member_no = f"LM-{700000 + index}"
        address = person.moved_to or person.address
        y, m, d = person.birth.split("-")
        rows.append([member_no, w.noise.first_name(person.first), w.noise.last_name(person.last), f"{d}/{m}/{y}",
                     w.junk_email(person.email) if rng.random() < 0.8 else "", w.junk_phone(person.mobile),
                     address.number, f"{address.street} {address.suffix}", address.unit, address.city, address.state,
                     address.zip])
        w.record("loyalty", member_no, person)
    _write_csv(out / "loyalty" / "members.csv",
               ["member_no", "first", "last", "dob", "email", "mobile", "street_number", "street", "unit", "city",
                "state", "zip"], rows, encoding="cp1252")


def _write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding, errors="replace") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


DEMO_CONFIG = """\
# c360 demo: four systems that each know some of the same customers.
warehouse: sqlite:///.c360/warehouse.db

sources:
  - name: crm
    path: data/crm/contacts_*.csv
    format: csv
    id: Id
    updated_at: LastModifiedDate
    default_country: US
    fields:
      first_name: FirstName
      last_name: LastName
      email: Email
      phone: Phone
      address_line1: MailingStreet
      city: MailingCity
      region: MailingState
      postal_code: MailingPostalCode
      country: {value: US}
      birth_date: {column: Birthdate, format: "%Y-%m-%d"}

  - name: shop
    path: data/shop/customers.jsonl
    format: jsonl
    id: customer_id
    updated_at: updated_at
    fields:
      full_name: name
      email: email
      phone: phone
      address: shipping_address

  - name: shop_orders
    kind: engagement
    of: shop
    path: data/shop/orders.csv
    format: csv
    id: order_id
    person_id: customer_id
    occurred_at: ordered_at
    fields: {type: {value: order}, amount: total_amount, currency: currency, status: status, channel: {value: web}}

  - name: support
    path: data/support/tickets.csv
    format: csv
    id: ticket_id
    updated_at: created_at
    fields:
      full_name: requester_name
      email: requester_email
      phone: requester_phone

  - name: support_tickets
    kind: engagement
    of: support
    path: data/support/tickets.csv
    format: csv
    id: ticket_id
    person_id: ticket_id
    occurred_at: created_at
    fields: {type: {value: ticket}, status: status, subject: subject, channel: {value: support}}

  - name: loyalty
    path: data/loyalty/members.csv
    format: csv
    id: member_no
    fields:
      first_name: first
      last_name: last
      birth_date: {column: dob, format: "%d/%m/%Y"}
      email: email
      phone: mobile
      address_line1: {columns: [street_number, street], join: " "}
      address_line2: unit
      city: city
      region: state
      postal_code: zip
    identifiers:
      loyalty_number: member_no
"""


@dataclass(frozen=True)
class DemoSummary:
    people: int
    records: dict[str, int]
    out_dir: Path


def write_demo(out_dir: Path, people: int = 2000, seed: int = 360, write_config: bool = True) -> DemoSummary:
    """Write the demo data set (and its c360.yaml, unless one is there) to `out_dir`."""
    population = generate_people(people, seed)
    rng = random.Random(seed + 1)
    writer = _Writer(_Noise(rng))
    data = out_dir / "data"
    presence: dict[str, tuple[float, Callable[[list[Person], _Writer, Path], None]]] = {
        "crm": (0.7, _crm), "shop": (0.5, _shop), "support": (0.3, _support), "loyalty": (0.4, _loyalty),
    }
    members: dict[str, list[Person]] = {name: [] for name in presence}
    for person in population:
        chosen = [name for name, (p, _) in presence.items() if rng.random() < p] or [rng.choice(list(presence))]
        for name in chosen:
            members[name].append(person)
    for name, (_, write) in presence.items():
        write(members[name], writer, data)
    _write_csv(out_dir / "truth.csv", ["source", "source_record_id", "person_id"], [list(t) for t in writer.truth])
    _write_people(out_dir / "people.csv", population)
    config_path = out_dir / "c360.yaml"
    if write_config and not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    counts: dict[str, int] = {}
    for source, _, _ in writer.truth:
        counts[source] = counts.get(source, 0) + 1
    return DemoSummary(people, counts, out_dir)


def _write_people(path: Path, population: list[Person]) -> None:
    rows = []
    for p in population:
        address = p.moved_to or p.address
        rows.append([p.person_id, p.first, p.last, p.gender, p.birth, p.new_email or p.email, f"+1{p.mobile}",
                     address.line1(True) + (f" {address.unit}" if address.unit else ""), address.city, address.state,
                     address.zip, "|".join(p.tags)])
    _write_csv(path, ["person_id", "first_name", "last_name", "gender", "birth_date", "email", "phone",
                      "address_line1", "city", "region", "postal_code", "tags"], rows)


__all__ = ["DemoSummary", "Person", "generate_people", "replace", "write_demo"]
